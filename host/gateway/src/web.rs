//! The web page at `/`: three static files built into the binary (no CDN, no build step),
//! served with a strict Content-Security-Policy. `TAPEDECK_WEB_DIR` serves them from a
//! folder instead, read on every request, for working on the page without rebuilding.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ErrorBody};

/// The page's files: name, content type, built-in content.
const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../web/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../web/app.css"),
    ),
];

const CSP: &str = "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; \
                   style-src 'self'; script-src 'self'; connect-src 'self'; \
                   frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn serve(name: &str) -> Response {
    let Some((name, ctype, built_in)) = FILES.iter().find(|(n, _, _)| *n == name) else {
        return ApiError::NotFound.into_response();
    };
    let body = match std::env::var_os("TAPEDECK_WEB_DIR") {
        Some(dir) => match std::fs::read_to_string(std::path::Path::new(&dir).join(name)) {
            Ok(s) => s,
            Err(_) => return ApiError::NotFound.into_response(),
        },
        None => (*built_in).to_owned(),
    };
    let mut res = (StatusCode::OK, body).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

/// The web page.
#[utoipa::path(
    get,
    path = "/",
    tag = "meta",
    operation_id = "web_page",
    responses((status = 200, description = "The web page", content_type = "text/html",
               body = String)),
)]
async fn page() -> Response {
    serve("index.html")
}

/// The web page's script and style (`app.js`, `app.css`).
#[utoipa::path(
    get,
    path = "/assets/{file}",
    tag = "meta",
    operation_id = "web_asset",
    params(("file" = String, Path, description = "`app.js` or `app.css`")),
    responses(
        (status = 200, description = "The file", content((String = "text/javascript"),
                                                         (String = "text/css"))),
        (status = 404, description = "`not_found`: no such file", body = ErrorBody),
    ),
)]
async fn asset(Path(file): Path<String>) -> Response {
    serve(&file)
}

/// `GET /` and `GET /assets/{file}`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> OpenApiRouter<S> {
    OpenApiRouter::new()
        .routes(routes!(page))
        .routes(routes!(asset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_listed_files_are_served() {
        assert_eq!(serve("app.js").status(), StatusCode::OK);
        assert_eq!(serve("../Cargo.toml").status(), StatusCode::NOT_FOUND);
        assert_eq!(
            serve("index.html").headers()[header::CONTENT_SECURITY_POLICY],
            CSP
        );
    }
}
