//! Identity and sessions: tokens end when their account changes (role,
//! password, removal, logout), in every gateway; a deleted tenant's tokens and links do
//! not open a new tenant of the same name; anonymous callers cannot tell which tenants
//! exist; password guessing is capped per account while the owner still gets in; a
//! tenant keeps an admin. Real `tapedeck serve` gateways over one real redis-server.

use super::*;

const OPERATOR: &str = "op-token-sessions-0123456789abcdef";
const PASSWORD: &str = "correct horse battery";

/// Two gateways on one Redis, with the operator token and `extra` flags.
struct Pair {
    dir: tempfile::TempDir,
    redis: RedisServer,
    _gateways: Vec<Service>,
    one: Api,
    two: Api,
}

fn two_gateways(role: Role, extra: Vec<(&'static str, String)>) -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"));
    let mut flags = vec![("admin-token", OPERATOR.to_string())];
    flags.extend(extra);
    let gateways: Vec<Service> = (0..2)
        .map(|i| {
            Service::role(
                if i == 0 { role } else { Role::Gateway },
                &redis.url(),
                dir.path(),
                flags.clone(),
            )
        })
        .collect();
    let one = Api::new(&gateways[0].base);
    let two = Api::new(&gateways[1].base);
    Pair {
        dir,
        redis,
        _gateways: gateways,
        one,
        two,
    }
}

async fn create_tenant(api: &Api, name: &str, self_register: bool) {
    let r = api
        .with_token(OPERATOR)
        .post("/v1/admin/tenants")
        .json(&json!({"name": name, "self_register": self_register}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        201,
        "create {name}: {}",
        r.text().await.unwrap()
    );
}

/// Creates an account through the operator API and logs it in.
async fn account(api: &Api, tenant: &str, email: &str, role: &str) -> Api {
    let r = api
        .with_token(OPERATOR)
        .post(&format!("/v1/admin/tenants/{tenant}/users"))
        .json(&json!({"email": email, "password": PASSWORD, "role": role}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    api.clone().login(tenant, email).await
}

/// The status of `GET /v1/jobs` with `api`'s token.
async fn jobs_status(api: &Api) -> u16 {
    api.get("/v1/jobs").send().await.unwrap().status().as_u16()
}

/// Waits (at most 3 s: the gateways trust a checked session for 1 s) until `api`'s token
/// is refused.
async fn refused_soon(api: &Api, what: &str) {
    let api = api.clone();
    wait_for(Duration::from_secs(3), what, async || {
        jobs_status(&api).await == 401
    })
    .await;
}

async fn login_status(api: &Api, tenant: &str, email: &str, password: &str) -> u16 {
    api.post("/v1/auth/login")
        .json(&json!({"tenant": tenant, "email": email, "password": password}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_accounts_lose_their_tokens_in_every_gateway() {
    let p = two_gateways(Role::Gateway, vec![]);
    create_tenant(&p.one, "acme", true).await;
    let admin = account(&p.one, "acme", "boss@acme.example", "admin").await;
    let bob_one = account(&p.one, "acme", "bob@acme.example", "user").await;
    let bob_two = p.two.clone().login("acme", "bob@acme.example").await;
    for api in [&bob_one, &bob_two, &bob_one.rebased(&p.two.base)] {
        assert_eq!(jobs_status(api).await, 200);
    }

    // Logout ends this token only: at once where it was made, within the cache's second
    // in the other gateway; the other token goes on.
    let r = bob_one.post("/v1/auth/logout").send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(jobs_status(&bob_one).await, 401);
    refused_soon(
        &bob_one.rebased(&p.two.base),
        "the logged-out token to fail on gateway two",
    )
    .await;
    assert_eq!(jobs_status(&bob_two).await, 200);

    // A role change ends every earlier token; the next login carries the new role.
    let r = admin
        .patch("/v1/tenant/users/bob@acme.example")
        .json(&json!({"role": "admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    refused_soon(&bob_two, "bob's token to end with his promotion").await;
    let bob_admin = p.two.clone().login("acme", "bob@acme.example").await;
    assert_eq!(
        bob_admin
            .get("/v1/tenant/users")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // The reported attack: a demoted admin's token can no longer create admins.
    let r = admin
        .patch("/v1/tenant/users/bob@acme.example")
        .json(&json!({"role": "user"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = bob_admin
        .rebased(&p.one.base)
        .post("/v1/tenant/users")
        .json(&json!({"email": "sock@acme.example", "password": PASSWORD, "role": "admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a demoted admin's token");
    refused_soon(&bob_admin, "the demoted token on gateway two").await;

    // A password change ends every token of the user (the one asking too).
    let bob = p.one.clone().login("acme", "bob@acme.example").await;
    let bob_elsewhere = p.two.clone().login("acme", "bob@acme.example").await;
    let r = bob
        .post("/v1/auth/password")
        .json(&json!({"current_password": "wrong password!", "new_password": "a new long passphrase"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a wrong current password changes nothing");
    assert_eq!(jobs_status(&bob).await, 200);
    let r = bob
        .post("/v1/auth/password")
        .json(&json!({"current_password": PASSWORD, "new_password": "short"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "a weak new password");
    let r = bob
        .post("/v1/auth/password")
        .json(&json!({"current_password": PASSWORD, "new_password": "a new long passphrase"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(jobs_status(&bob).await, 401);
    refused_soon(
        &bob_elsewhere,
        "bob's other token to end with the password change",
    )
    .await;
    assert_eq!(
        login_status(&p.two, "acme", "bob@acme.example", PASSWORD).await,
        401
    );
    assert_eq!(
        login_status(&p.two, "acme", "bob@acme.example", "a new long passphrase").await,
        200
    );

    // Logout-all ends every session of the caller, in both gateways.
    let login = |api: &Api| {
        let api = api.clone();
        async move {
            let v: Value = api
                .post("/v1/auth/login")
                .json(&json!({"tenant": "acme", "email": "bob@acme.example", "password": "a new long passphrase"}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            api.with_token(v["token"].as_str().unwrap())
        }
    };
    let (b1, b2) = (login(&p.one).await, login(&p.two).await);
    assert_eq!(jobs_status(&b2).await, 200);
    let r = b1.post("/v1/auth/logout-all").send().await.unwrap();
    assert_eq!(r.status(), 200);
    // These two, and the one the successful login check above opened.
    assert_eq!(r.json::<Value>().await.unwrap()["ended"], 3);
    assert_eq!(jobs_status(&b1).await, 401);
    refused_soon(&b2, "every session after logout-all").await;

    // A removed user's token stops uploading at once.
    let bob = login(&p.two).await;
    let r = admin
        .delete("/v1/tenant/users/bob@acme.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    refused_soon(&bob, "the removed user's token").await;
    let r = bob.upload_raw(&media(SMALL), &[]).await;
    assert_eq!(r.status(), 401);

    // The last admin can neither demote nor remove themselves; with a second admin, the
    // first may step down.
    let r = admin
        .patch("/v1/tenant/users/boss@acme.example")
        .json(&json!({"role": "user"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "last_admin"
    );
    let r = admin
        .delete("/v1/tenant/users/boss@acme.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let _second = account(&p.one, "acme", "deputy@acme.example", "admin").await;
    let r = admin
        .patch("/v1/tenant/users/boss@acme.example")
        .json(&json!({"role": "user"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    refused_soon(&admin, "the stepped-down admin's token").await;
    drop(p.dir);
}

const SMALL: &str = "aac-lc_8k_stereo_short__musicmetadata_pr-544.m4a";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_tenants_tokens_and_links_do_not_open_its_successor() {
    let p = two_gateways(Role::All, vec![]);
    create_tenant(&p.one, "initech", true).await;
    let admin = account(&p.one, "initech", "peter@initech.example", "admin").await;
    let job = admin.upload_and_wait(&media(SMALL), &[]).await;
    assert_eq!(job["status"], "done");
    let id = job["id"].as_str().unwrap().to_owned();
    // A signed link as a notification would carry it (the deployment's link key).
    let mut conn = p.redis.conn();
    let key: String = redis::cmd("GET")
        .arg(tapedeck::store::keys::LINK_KEY)
        .query(&mut conn)
        .unwrap();
    let output: String = redis::cmd("HGET")
        .arg(tapedeck::store::keys::job_key("initech", &id))
        .arg("output_key")
        .query(&mut conn)
        .unwrap();
    let signer = tapedeck::store::links::LinkSigner::new(hex::decode(key).unwrap());
    let link = signer.url(&p.one.base, "initech", &id, &output, 4_000_000_000);
    assert_eq!(reqwest::get(&link).await.unwrap().status(), 200);
    // Its notification is in the outbox; it goes with the tenant.
    let op = p.one.with_token(OPERATOR);
    let initech_mail = async || {
        op.get_json("/v1/admin/outbox").await["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["name"].as_str().unwrap().starts_with("initech."))
            .count()
    };
    wait_for(Duration::from_secs(20), "initech's mail", async || {
        initech_mail().await > 0
    })
    .await;

    let r = p
        .one
        .with_token(OPERATOR)
        .delete("/v1/admin/tenants/initech")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    refused_soon(&admin, "the deleted tenant's token").await;
    let redis = p.redis.url();
    wait_for(
        Duration::from_secs(30),
        "initech to be purged",
        async || {
            let mut conn = redis::Client::open(redis.as_str())
                .unwrap()
                .get_connection()
                .unwrap();
            let left: Vec<String> = redis::cmd("KEYS")
                .arg("td:{initech}:*")
                .query(&mut conn)
                .unwrap();
            left.is_empty()
        },
    )
    .await;
    assert_eq!(initech_mail().await, 0, "the deleted tenant's mail is gone");
    create_tenant(&p.one, "initech", true).await;
    let newcomer = account(&p.one, "initech", "peter@initech.example", "admin").await;
    let fresh = newcomer.upload_and_wait(&media(SMALL), &[]).await;
    assert_eq!(fresh["status"], "done");

    // The old admin's token opens nothing of the new incarnation, on either gateway.
    for base in [&p.one.base, &p.two.base] {
        let old = admin.rebased(base);
        for path in ["/v1/tenant/users", "/v1/jobs"] {
            let r = old.get(path).send().await.unwrap();
            assert_eq!(r.status(), 401, "{path} with the old tenant's token");
        }
        let r = old
            .get(&format!(
                "/v1/jobs/{}/output",
                fresh["id"].as_str().unwrap()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    // The old link is dead too (its job is gone with its incarnation).
    let status = reqwest::get(&link).await.unwrap().status();
    assert!(status == 404 || status == 403, "old link: {status}");
    // The new admin's token works.
    assert_eq!(jobs_status(&newcomer).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_callers_cannot_tell_which_tenants_exist() {
    let p = two_gateways(Role::Gateway, vec![]);
    create_tenant(&p.one, "closed", false).await;
    create_tenant(&p.one, "open", true).await;
    let register = |tenant: &'static str| {
        let api = p.one.clone();
        async move {
            let r = api
                .post("/v1/auth/register")
                .json(&json!({"tenant": tenant, "email": "x@example.com", "password": PASSWORD}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (closed, unknown) = (register("closed").await, register("nosuch").await);
    assert_eq!(closed, unknown, "closed and unknown tenants answer alike");
    assert_eq!(closed.0, 403);

    // Login: an unknown tenant costs what an unknown user of a real tenant costs (one
    // password-hash verification), so timing tells nothing. The fastest of 5 each: a
    // skipped verification would be ~100x faster.
    let _ = p.one.clone().signed_up("open", "real@example.com").await;
    async fn fastest(api: &Api, tenant: &str) -> Duration {
        let mut best = Duration::MAX;
        for i in 0..5 {
            let t = Instant::now();
            let s = login_status(api, tenant, &format!("nobody{i}@example.com"), PASSWORD).await;
            assert_eq!(s, 401);
            best = best.min(t.elapsed());
        }
        best
    }
    let known = fastest(&p.one, "open").await;
    let unknown = fastest(&p.two, "nosuch").await;
    assert!(
        unknown * 3 >= known,
        "unknown tenant {unknown:?} vs known tenant {known:?}"
    );

    // An address the notifier could not deliver to is refused at registration.
    for bad in ["a(b)@example.com", "a,b@example.com", "x@exa mple.com"] {
        let r = p
            .one
            .post("/v1/auth/register")
            .json(&json!({"tenant": "open", "email": bad, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_is_capped_per_account_yet_the_owner_gets_in() {
    // The test client is the trusted proxy: `X-Forwarded-For` names each "client".
    let p = two_gateways(
        Role::Gateway,
        vec![("trusted-proxies", "127.0.0.1/32".into())],
    );
    let _ = p
        .one
        .clone()
        .signed_up("default", "owner@example.com")
        .await;
    let from = |api: &Api, addr: String, password: &'static str| {
        let api = api.clone();
        async move {
            api.post("/v1/auth/login")
                .header("x-forwarded-for", addr)
                .json(&json!({"email": "owner@example.com", "password": password}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // The owner's usual address.
    assert_eq!(from(&p.one, "198.51.100.7".into(), PASSWORD).await, 200);
    // 20 guesses from 20 addresses, spread over both gateways.
    let mut answers = Vec::new();
    for i in 0..20 {
        let gw = if i % 2 == 0 { &p.one } else { &p.two };
        answers.push(from(gw, format!("203.0.113.{i}"), "guess guess guess").await);
    }
    let tried = answers.iter().filter(|s| **s == 401).count();
    let capped = answers.iter().filter(|s| **s == 429).count();
    assert_eq!(tried + capped, 20, "{answers:?}");
    assert!(
        tried <= 8,
        "5 failures, then a burst of 3 at most: {answers:?}"
    );
    // The owner, from the known address, with the right password: in at once.
    assert_eq!(from(&p.two, "198.51.100.7".into(), PASSWORD).await, 200);
}
