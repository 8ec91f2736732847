//! The OpenAPI 3.1 description of the HTTP API, `GET /openapi.json`, and a docs page that
//! renders it offline, `GET /docs`.
//!
//! One source: [`crate::routes`] registers each handler with its `#[utoipa::path]` (path,
//! parameters, bodies, statuses, links), and the bodies are the real types, which derive
//! `ToSchema` (`tapedeck-model` and `tapedeck-store` behind their `openapi` feature); the
//! error `code` is the [`ErrorCode`](crate::error::ErrorCode) enum. [`document`] adds what
//! operations of a kind share: the security schemes, and [`CommonErrors`] (401 for a
//! token, 400/413/415/422 for a JSON body, 400 for a query, 500/503 for what reaches
//! Redis).

use std::sync::LazyLock;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::Digest;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, KnownFormat, ObjectBuilder, RefOr, ResponseBuilder, Schema, SchemaFormat, Type,
};
use utoipa::{Modify, PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ErrorBody, ErrorCode, ErrorDetail};

/// The body of a file (an MP3, a WebAssembly component, a media upload).
pub struct Binary;

impl PartialSchema for Binary {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .into()
    }
}

impl ToSchema for Binary {}

/// What the routes do not say: the title, the tags, the error shape's parts.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Tapedeck",
        description = "Converts MP4/M4A/MOV audio to MP3. User routes take a user's token \
                       (`bearer`, from `POST /v1/auth/login`); `/v1/tenant/...` routes a \
                       tenant admin's; `/v1/admin/...` routes the operator token \
                       (`operator`). Every error is `{\"error\": {\"code\", \"message\"}}`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(ErrorBody, ErrorDetail, ErrorCode, crate::health::ReadyCheck)),
    tags(
        (name = "auth", description = "Accounts and tokens"),
        (name = "jobs", description = "Conversions"),
        (name = "tenant", description = "A tenant admin's settings, users, usage, plugins"),
        (name = "operator", description = "The operator API (docs/admin-api.md)"),
        (name = "compat", description = "Routes of the replaced Python service"),
        (name = "meta", description = "Health, this description, the web page"),
    ),
)]
pub struct ApiDoc;

/// The whole description: the routes' operations and schemas, the security schemes, the
/// errors operations share.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut openapi = crate::routes().into_openapi();
    SecuritySchemes.modify(&mut openapi);
    CommonErrors.modify(&mut openapi);
    openapi
}

/// `bearer` (a user's JWT), `operator` (the operator token), `basic` (compat `/login`).
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut bearer = Http::new(HttpAuthScheme::Bearer);
        bearer.bearer_format = Some("JWT".into());
        bearer.description = Some("A user's token, from `POST /v1/auth/login`.".into());
        components.add_security_scheme("bearer", SecurityScheme::Http(bearer));
        let mut operator = Http::new(HttpAuthScheme::Bearer);
        operator.description = Some(
            "The operator token (`--admin-token`, or the `tdop_...` printed on the first \
             start)."
                .into(),
        );
        components.add_security_scheme("operator", SecurityScheme::Http(operator));
        let mut basic = Http::new(HttpAuthScheme::Basic);
        basic.description = Some("E-mail and password (compat `POST /login`).".into());
        components.add_security_scheme("basic", SecurityScheme::Http(basic));
    }
}

/// Adds the error answers operations share, from what each operation is: 401 when it
/// takes a token, 400/413/415/422 for a JSON body, 400 for query parameters, 500/503
/// when it reaches Redis (every `/v1` and compat route). An operation's own answer for a
/// status wins.
struct CommonErrors;

fn error_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                    "ErrorBody",
                ))))
                .build(),
        )
        .build()
}

impl Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let reaches_redis = path.starts_with("/v1/")
                || matches!(path.as_str(), "/login" | "/upload" | "/download");
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                add_common_errors(op, reaches_redis);
            }
        }
    }
}

fn add_common_errors(op: &mut Operation, reaches_redis: bool) {
    let mut add = |status: &str, description: &str| {
        op.responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::T(error_response(description)));
    };
    let takes_token = op.security.as_ref().is_some_and(|s| {
        s.iter().any(|r| {
            serde_json::to_value(r).is_ok_and(|v| v.as_object().is_some_and(|o| !o.is_empty()))
        })
    });
    if takes_token {
        add(
            "401",
            "`invalid_token`: missing, invalid or expired token (`WWW-Authenticate: Bearer`)",
        );
    }
    let json_body = op
        .request_body
        .as_ref()
        .is_some_and(|b| b.content.contains_key("application/json"));
    let query = op.parameters.as_ref().is_some_and(|ps| {
        ps.iter()
            .any(|p| matches!(p.parameter_in, ParameterIn::Query))
    });
    if json_body {
        add(
            "400",
            "`invalid_json` (not JSON), `invalid_input` and others (see `code`)",
        );
        add("413", "`field_too_large`: a JSON body over 16 KiB");
        add(
            "415",
            "`unsupported_media_type`: not `Content-Type: application/json`",
        );
        add(
            "422",
            "`invalid_body`: JSON of the wrong shape (a missing or unknown field, a wrong type)",
        );
    }
    if query {
        add(
            "400",
            "`invalid_query`: a query parameter of the wrong type",
        );
    }
    if reaches_redis {
        add("500", "`internal`: a bug; the cause is logged");
        op.responses
            .responses
            .entry("503".to_owned())
            .or_insert_with(|| {
                let mut response = error_response(
                    "`unavailable`: Redis or the blob store did not answer (`Retry-After`)",
                );
                response.headers.insert("Retry-After".into(), retry_after());
                RefOr::T(response)
            });
    }
}

/// The `Retry-After` header of a 503 (every 503 carries one).
fn retry_after() -> utoipa::openapi::Header {
    utoipa::openapi::HeaderBuilder::new()
        .schema(u64::schema())
        .description(Some("Seconds"))
        .build()
}

/// The description, serialised once.
pub static SPEC_JSON: LazyLock<String> = LazyLock::new(|| {
    let mut spec = serde_json::to_value(document()).expect("the OpenAPI document serialises");
    camel_case_links(&mut spec);
    serde_json::to_string_pretty(&spec).expect("JSON serialises")
});

/// utoipa 5 writes a Link object's fields in snake case (`operation_id`); OpenAPI spells
/// them `operationId`, `operationRef`, `requestBody`, and tools ignore the others.
fn camel_case_links(spec: &mut serde_json::Value) {
    let operations = spec["paths"]
        .as_object_mut()
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut());
    for op in operations {
        let responses = op.get_mut("responses").and_then(|r| r.as_object_mut());
        let responses = responses.into_iter().flatten();
        for (_, response) in responses {
            let links = response.get_mut("links").and_then(|l| l.as_object_mut());
            for (_, link) in links.into_iter().flatten() {
                let Some(link) = link.as_object_mut() else {
                    continue;
                };
                for (snake, camel) in [
                    ("operation_id", "operationId"),
                    ("operation_ref", "operationRef"),
                    ("request_body", "requestBody"),
                ] {
                    if let Some(v) = link.remove(snake) {
                        link.insert(camel.to_owned(), v);
                    }
                }
            }
        }
    }
}

/// This description.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 description of this API",
               content_type = "application/json", body = Object)),
)]
pub async fn spec() -> Response {
    let mut res = (StatusCode::OK, SPEC_JSON.as_str()).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

const DOCS_SCRIPT: &str = r#"'use strict';
(async () => {
  const main = document.getElementById('docs');
  const el = (tag, props, ...kids) => {
    const e = document.createElement(tag);
    Object.assign(e, props || {});
    for (const k of kids) e.append(k);
    return e;
  };
  const code = (t) => el('code', { textContent: t });
  let spec;
  try {
    const res = await fetch('/openapi.json');
    spec = await res.json();
  } catch (e) {
    main.replaceChildren(el('h1', { textContent: 'Tapedeck API' }),
      el('p', { textContent: 'Could not load /openapi.json: ' + e }));
    return;
  }
  const refName = (r) => r.split('/').pop();
  const schemaText = (s) => {
    if (!s) return '';
    if (s.$ref) return refName(s.$ref);
    if (s.type === 'array' && s.items) return schemaText(s.items) + '[]';
    if (s.oneOf) return s.oneOf.map(schemaText).join(' | ');
    if (Array.isArray(s.type)) return s.type.join(' | ');
    return (s.type || 'object') + (s.format ? ' (' + s.format + ')' : '');
  };
  const table = (head, rows) => {
    const t = el('table', {}, el('tr', {}, ...head.map((h) => el('th', { textContent: h }))));
    for (const r of rows) t.append(el('tr', {}, ...r.map((c) => el('td', {}, c))));
    return t;
  };
  const info = spec.info || {};
  const out = [el('h1', { textContent: (info.title || 'API') + ' ' + (info.version || '') }),
    el('p', { textContent: info.description || '' }),
    el('p', {}, 'OpenAPI ' + spec.openapi + ': ', el('a', { href: '/openapi.json', textContent: '/openapi.json' }))];
  const byTag = new Map();
  for (const [path, item] of Object.entries(spec.paths || {})) {
    for (const method of ['get', 'put', 'post', 'patch', 'delete']) {
      const op = item[method];
      if (!op) continue;
      const tag = (op.tags && op.tags[0]) || 'other';
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push([method, path, op]);
    }
  }
  const tagDesc = new Map((spec.tags || []).map((t) => [t.name, t.description || '']));
  for (const [tag, ops] of byTag) {
    out.push(el('h2', { textContent: tag }), el('p', { className: 's', textContent: tagDesc.get(tag) || '' }));
    for (const [method, path, op] of ops) {
      const sec = (op.security || []).map((r) => Object.keys(r)[0] || 'none').join(' or ');
      const summary = el('summary', {}, el('span', { className: 'm ' + method, textContent: method.toUpperCase() }),
        path + ' ', el('span', { className: 's', textContent: op.summary || '' }),
        sec ? el('span', { className: 'lock', textContent: ' [' + sec + ']' }) : '');
      const body = el('div', { className: 'b' });
      if (op.description) body.append(el('p', { textContent: op.description }));
      if (op.parameters && op.parameters.length) {
        body.append(el('h4', { textContent: 'Parameters' }), table(['name', 'in', 'type', 'required', 'description'],
          op.parameters.map((p) => [code(p.name), p.in, schemaText(p.schema), p.required ? 'yes' : '', p.description || ''])));
      }
      if (op.requestBody) {
        body.append(el('h4', { textContent: 'Request body' }), table(['content type', 'schema'],
          Object.entries(op.requestBody.content || {}).map(([ct, c]) => [code(ct), schemaText(c.schema)])));
      }
      body.append(el('h4', { textContent: 'Responses' }), table(['status', 'description', 'content'],
        Object.entries(op.responses || {}).map(([st, r]) => [code(st), r.description || '',
          Object.entries(r.content || {}).map(([ct, c]) => ct + ': ' + schemaText(c.schema)).join('; ')])));
      out.push(el('details', {}, summary, body));
    }
  }
  const schemas = (spec.components && spec.components.schemas) || {};
  out.push(el('h2', { textContent: 'Schemas' }));
  for (const [name, s] of Object.entries(schemas)) {
    out.push(el('details', {}, el('summary', { textContent: name }),
      el('div', { className: 'b' }, el('pre', { textContent: JSON.stringify(s, null, 2) }))));
  }
  main.replaceChildren(...out);
})();
"#;

static DOCS_HTML: LazyLock<String> = LazyLock::new(|| {
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Tapedeck API</title>\n<style>{}</style>\n</head>\n<body>\n\
         <main id=\"docs\"><h1>Tapedeck API</h1><p>Loading <a href=\"/openapi.json\">\
         /openapi.json</a>…</p></main>\n<script>{}</script>\n</body>\n</html>\n",
        DOCS_STYLE, DOCS_SCRIPT
    )
});

const DOCS_STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#1b1b1b;\
background:#fafafa}main{max-width:62rem;margin:0 auto;padding:1rem 1.5rem 4rem}\
h1{margin:.5rem 0}h2{margin-top:2rem;border-bottom:1px solid #ccc}\
details{background:#fff;border:1px solid #ddd;border-radius:4px;margin:.4rem 0}\
summary{cursor:pointer;padding:.45rem .6rem;font-family:ui-monospace,monospace}\
.m{display:inline-block;min-width:4.2rem;font-weight:700}.get{color:#0a5}.post{color:#05a}\
.put{color:#a60}.patch{color:#960}.delete{color:#b22}.s{color:#555;font-family:system-ui,sans-serif}\
.b{padding:0 .8rem .6rem}table{border-collapse:collapse;margin:.3rem 0}\
td,th{border:1px solid #ddd;padding:.2rem .45rem;text-align:left;vertical-align:top}\
code,pre{font-family:ui-monospace,monospace;font-size:13px}pre{background:#f3f3f3;\
padding:.5rem;overflow:auto;max-height:24rem}.lock{color:#a60}";

/// The Content-Security-Policy of `/docs`: only its own inline script (by hash) and style,
/// and fetches of this origin.
static DOCS_CSP: LazyLock<String> = LazyLock::new(|| {
    let hash = |s: &str| base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(s));
    format!(
        "default-src 'none'; script-src 'sha256-{}'; style-src 'sha256-{}'; \
         connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        hash(DOCS_SCRIPT),
        hash(DOCS_STYLE)
    )
});

/// A page listing the operations of `/openapi.json` (self-contained: no CDN).
#[utoipa::path(
    get,
    path = "/docs",
    tag = "meta",
    responses((status = 200, description = "The API's operations, readable",
               content_type = "text/html", body = String)),
)]
pub async fn docs() -> Response {
    let mut res = (StatusCode::OK, DOCS_HTML.as_str()).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Ok(csp) = HeaderValue::from_str(&DOCS_CSP) {
        h.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}

/// `GET /openapi.json` and `GET /docs`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> OpenApiRouter<S> {
    OpenApiRouter::new()
        .routes(routes!(spec))
        .routes(routes!(docs))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;

    const METHODS: &[&str] = &["get", "post", "put", "patch", "delete"];

    fn spec() -> Value {
        serde_json::from_str(&SPEC_JSON).expect("the spec is JSON")
    }

    /// Every link names an operation that exists and only parameters that operation
    /// takes: the stateful phase of the API test follows them.
    #[test]
    fn links_lead_to_operations() {
        let spec = spec();
        let mut operations = std::collections::BTreeMap::new();
        for item in spec["paths"].as_object().expect("paths").values() {
            for method in METHODS {
                if let Some(op) = item.get(*method) {
                    let id = op["operationId"].as_str().expect("an operation id");
                    let params: BTreeSet<String> = op["parameters"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|p| p["name"].as_str().map(str::to_owned))
                        .collect();
                    operations.insert(id.to_owned(), params);
                }
            }
        }
        let mut links = 0;
        for item in spec["paths"].as_object().expect("paths").values() {
            for method in METHODS {
                let Some(op) = item.get(*method) else {
                    continue;
                };
                for response in op["responses"].as_object().expect("responses").values() {
                    for (name, link) in response["links"].as_object().into_iter().flatten() {
                        links += 1;
                        let target = link["operationId"].as_str().expect("an operationId");
                        let params = operations
                            .get(target)
                            .unwrap_or_else(|| panic!("link {name}: no operation {target}"));
                        for param in link["parameters"].as_object().expect("parameters").keys() {
                            assert!(
                                params.contains(param),
                                "link {name}: {target} has no {param}"
                            );
                        }
                    }
                }
            }
        }
        assert!(links >= 7, "{links} links");
    }

    #[test]
    fn operations_state_their_security() {
        let spec = spec();
        let schemes = spec["components"]["securitySchemes"]
            .as_object()
            .expect("security schemes");
        for name in ["bearer", "operator", "basic"] {
            assert!(schemes.contains_key(name), "{name}");
        }
        for (path, item) in spec["paths"].as_object().expect("paths") {
            for method in METHODS {
                let Some(op) = item.get(*method) else {
                    continue;
                };
                let names: BTreeSet<String> = op["security"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_object)
                    .flat_map(|r| r.keys().cloned())
                    .collect();
                let expected: &[&str] = if path.starts_with("/v1/admin/") {
                    &["operator"]
                } else if path.starts_with("/v1/auth/") || !path.starts_with("/v1/") {
                    match path.as_str() {
                        "/login" => &["basic"],
                        "/upload" | "/download" => &["bearer"],
                        // The caller's own sessions and password.
                        "/v1/auth/logout" | "/v1/auth/logout-all" | "/v1/auth/password" => {
                            &["bearer"]
                        }
                        _ => &[],
                    }
                } else {
                    &["bearer"]
                };
                let expected: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
                assert_eq!(names, expected, "{method} {path}");
                // Every operation that takes a token documents the 401.
                if !names.is_empty() {
                    assert!(op["responses"].get("401").is_some(), "{method} {path}: 401");
                }
            }
        }
    }

    #[test]
    fn the_spec_is_openapi_3_1() {
        let spec = spec();
        assert!(
            spec["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1."))
        );
        // Every error response refers to the one error shape.
        let error = &spec["components"]["schemas"]["ErrorDetail"];
        for field in ["code", "message", "limit", "value", "layer"] {
            assert!(error["properties"].get(field).is_some(), "{field}");
        }
        for (path, item) in spec["paths"].as_object().expect("paths") {
            for method in METHODS {
                let Some(op) = item.get(*method) else {
                    continue;
                };
                for (status, response) in op["responses"].as_object().expect("responses") {
                    if status.starts_with('4') || status.starts_with('5') {
                        assert_eq!(
                            response["content"]["application/json"]["schema"]["$ref"],
                            "#/components/schemas/ErrorBody",
                            "{method} {path} {status}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_docs_page_allows_its_own_script_only() {
        let csp = DOCS_CSP.as_str();
        assert!(csp.contains("script-src 'sha256-"));
        assert!(!csp.contains("unsafe-inline"));
        assert!(DOCS_HTML.contains(DOCS_SCRIPT));
        assert!(!DOCS_HTML.contains("http://") && !DOCS_HTML.contains("https://"));
    }
}
