//! A tenant's users as its admin manages them (`/v1/tenant/users...`) and as the operator
//! adds them (`/v1/admin/tenants/{tenant}/users`). The contract is `docs/admin-api.md`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::extract::{ApiJson, ApiPath, Operator, require_admin};
use crate::tenants::existing;
use crate::{AppState, Caller};
use tapedeck_model::api::{Role, UserEnvelope, UserView};
use tapedeck_store::users::UserStore;

fn user_json(u: &tapedeck_store::users::UserRecord) -> UserView {
    UserView {
        id: u.id.clone(),
        email: u.email.clone(),
        role: u.role.clone(),
        created_at: u.created_at,
    }
}

/// `{"users": [...]}`
#[derive(Debug, Serialize, ToSchema)]
pub struct UserList {
    pub users: Vec<UserView>,
}

/// The tenant's accounts (tenant admin).
#[utoipa::path(
    get,
    path = "/v1/tenant/users",
    tag = "tenant",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The accounts", body = UserList),
        (status = 403, description = "`admin_only`", body = ErrorBody),
    ),
)]
pub async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<UserList>, ApiError> {
    require_admin(&caller)?;
    let users = UserStore::new(state.pool.clone())
        .list(&caller.0.tenant)
        .await?;
    Ok(Json(UserList {
        users: users.iter().map(user_json).collect(),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// As `Credentials`' (`POST /v1/auth/register`).
    #[schema(
        max_length = 254,
        pattern = "^[A-Za-z0-9_%+-]{1,32}(\\.[A-Za-z0-9_%+-]{1,16}){0,1}@[A-Za-z0-9]{1,20}(\\.[A-Za-z0-9]{1,20}){1,3}$"
    )]
    email: String,
    /// At least 8 characters, at most 1024 bytes (any 256 characters fit).
    #[schema(min_length = 8, max_length = 256)]
    password: String,
    /// Default `user`.
    #[serde(default = "user_role")]
    #[schema(value_type = Role)]
    role: String,
}

fn user_role() -> String {
    "user".into()
}

fn check_role(role: &str) -> Result<(), ApiError> {
    if role == "user" || role == "admin" {
        Ok(())
    } else {
        Err(ApiError::invalid_input("role is `user` or `admin`"))
    }
}

/// Creates an account in the admin's tenant (tenant admin; also when self-registration
/// is off).
#[utoipa::path(
    post,
    path = "/v1/tenant/users",
    tag = "tenant",
    security(("bearer" = [])),
    request_body = NewUser,
    responses(
        (status = 201, description = "Created", body = UserEnvelope,
         links(
             ("role" = (operation_id = "update_user",
                        parameters(("email" = "$response.body#/user/email")))),
             ("remove" = (operation_id = "remove_user",
                          parameters(("email" = "$response.body#/user/email")))),
         )),
        (status = 400, description = "`invalid_input`", body = ErrorBody),
        (status = 403, description = "`admin_only`", body = ErrorBody),
        (status = 409, description = "`email_taken`", body = ErrorBody),
    ),
)]
pub async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewUser>,
) -> Result<(StatusCode, Json<UserEnvelope>), ApiError> {
    require_admin(&caller)?;
    add_user(&state, &caller.0.tenant, body).await
}

/// Creates an account in a tenant, e.g. its first admin.
#[utoipa::path(
    post,
    path = "/v1/admin/tenants/{tenant}/users",
    tag = "operator",
    security(("operator" = [])),
    params(("tenant" = String, Path, description = "The tenant's name")),
    request_body = NewUser,
    responses(
        (status = 201, description = "Created", body = UserEnvelope),
        (status = 400, description = "`invalid_input`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such tenant", body = ErrorBody),
        (status = 409, description = "`email_taken`", body = ErrorBody),
    ),
)]
pub async fn operator_create_user(
    State(state): State<AppState>,
    _: Operator,
    ApiPath(tenant): ApiPath<String>,
    ApiJson(body): ApiJson<NewUser>,
) -> Result<(StatusCode, Json<UserEnvelope>), ApiError> {
    existing(&state, &tenant).await?;
    add_user(&state, &tenant, body).await
}

async fn add_user(
    state: &AppState,
    tenant: &str,
    body: NewUser,
) -> Result<(StatusCode, Json<UserEnvelope>), ApiError> {
    check_role(&body.role)?;
    let tenant = tenant.to_owned();
    let auth = state.auth.for_tenant(&tenant).stage.clone();
    let email = auth.normalize_email(&body.email)?;
    crate::account::deliverable(&email)?;
    auth.register(&tenant, &body.email, &body.password).await?;
    let users = UserStore::new(state.pool.clone());
    if body.role != "user" {
        users.set_role(&tenant, &email, &body.role).await?;
    }
    let user = users
        .get(&tenant, &email)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok((
        StatusCode::CREATED,
        Json(UserEnvelope {
            user: user_json(&user),
        }),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleChange {
    #[schema(value_type = Role)]
    role: String,
}

/// Changes an account's role (tenant admin).
///
/// Every session of the account ends (its tokens carry the role they were issued with):
/// the user logs in again with the new role. The tenant's last admin cannot be demoted.
#[utoipa::path(
    patch,
    path = "/v1/tenant/users/{email}",
    tag = "tenant",
    security(("bearer" = [])),
    params(("email" = String, Path, description = "The account's e-mail address")),
    request_body = RoleChange,
    responses(
        (status = 200, description = "The account now", body = UserEnvelope),
        (status = 400, description = "`invalid_input`: not a role", body = ErrorBody),
        (status = 403, description = "`admin_only`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`last_admin`: the tenant would have no admin", body = ErrorBody),
    ),
)]
pub async fn update_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(email): ApiPath<String>,
    ApiJson(body): ApiJson<RoleChange>,
) -> Result<Json<UserEnvelope>, ApiError> {
    require_admin(&caller)?;
    check_role(&body.role)?;
    let tenant = caller.0.tenant.clone();
    let email = email.trim().to_lowercase();
    let users = UserStore::new(state.pool.clone());
    let before = users
        .get(&tenant, &email)
        .await?
        .ok_or(ApiError::NotFound)?;
    if before.role == body.role {
        return Ok(Json(UserEnvelope {
            user: user_json(&before),
        }));
    }
    if before.role == "admin" {
        refuse_last_admin(&users, &tenant).await?;
    }
    if !users.set_role(&tenant, &email, &body.role).await? {
        return Err(ApiError::NotFound);
    }
    state.sessions.end_all(&tenant, &before.id).await?;
    let user = users
        .get(&tenant, &email)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(UserEnvelope {
        user: user_json(&user),
    }))
}

/// Removes an account (tenant admin).
///
/// Its logins fail and its tokens stop working at once; its jobs stay with the tenant.
#[utoipa::path(
    delete,
    path = "/v1/tenant/users/{email}",
    tag = "tenant",
    security(("bearer" = [])),
    params(("email" = String, Path, description = "The account's e-mail address")),
    responses(
        (status = 204, description = "Removed"),
        (status = 403, description = "`admin_only`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`cannot_remove_self`", body = ErrorBody),
    ),
)]
pub async fn remove_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(email): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    require_admin(&caller)?;
    let email = email.trim().to_lowercase();
    if email == caller.0.email {
        return Err(ApiError::Conflict(
            ErrorCode::CannotRemoveSelf,
            "an admin cannot remove their own account".into(),
        ));
    }
    let users = UserStore::new(state.pool.clone());
    let tenant = &caller.0.tenant;
    let user = users.get(tenant, &email).await?.ok_or(ApiError::NotFound)?;
    if user.role == "admin" {
        refuse_last_admin(&users, tenant).await?;
    }
    if !users.remove(tenant, &email).await? {
        return Err(ApiError::NotFound);
    }
    state.sessions.end_all(tenant, &user.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// 409 if `tenant` has one admin or none: taking one away would leave nobody to manage
/// it but the operator.
async fn refuse_last_admin(users: &UserStore, tenant: &str) -> Result<(), ApiError> {
    let admins = users
        .list(tenant)
        .await?
        .iter()
        .filter(|u| u.role == "admin")
        .count();
    if admins <= 1 {
        return Err(ApiError::Conflict(
            ErrorCode::LastAdmin,
            "this is the tenant's last admin: make another user admin first".into(),
        ));
    }
    Ok(())
}
