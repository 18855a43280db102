//! The web page `serve` shows at `/`: the runs, a run's step tree updating live, and the gate
//! prompt with approve and reject buttons; the run controls, and the history and schedules
//! views (at [`VIEWS`]). Files embedded in the binary (no build step, no external assets): the
//! page, its scripts and its styles ([`SCRIPT`], [`STYLE`] and the [`ASSETS`] beside them); it
//! talks to the API with the token the user enters.
//!
//! Every response of `serve` — the page, its files, the API, errors — carries [`CSP`] and the
//! headers beside it ([`security_headers`]): scripts and styles only from `serve`'s own files
//! (no inline script, style or event handler, so an injected fragment of HTML cannot run), no
//! framing by another site (clickjacking an Approve button), no content-type sniffing, no
//! referrer leaving the page.

use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};

/// The page.
pub const PAGE: &str = include_str!("web/index.html");

/// The page's script.
pub const SCRIPT: &str = include_str!("web/app.js");

/// The page's styles.
pub const STYLE: &str = include_str!("web/app.css");

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// The page's other files — the run controls, the history and schedules views, their styles —
/// as name, content type and content. Served beside `/` and beside `/runs/{id}`, like
/// [`SCRIPT`].
pub const ASSETS: [(&str, &str, &str); 4] = [
    ("controls.js", JS, include_str!("web/controls.js")),
    ("history.js", JS, include_str!("web/history.js")),
    ("schedules.js", JS, include_str!("web/schedules.js")),
    ("views.css", CSS, include_str!("web/views.css")),
];

/// The paths of the page's views besides `/` and `/runs/{id}` (the same page: its scripts
/// show the view of the path).
pub const VIEWS: [&str; 2] = ["/history", "/schedules"];

/// The Content-Security-Policy of every response.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                       img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page (at `/` and `/runs/{id}`).
pub async fn page() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-store")], Html(PAGE))
}

/// The page's script (beside `/` and beside `/runs/{id}`: the page links it relatively).
pub async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        SCRIPT,
    )
}

/// The page's styles (beside `/` and beside `/runs/{id}`).
pub async fn style() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        STYLE,
    )
}

/// One of [`ASSETS`].
pub fn asset(name: &str) -> Response {
    let Some((_, kind, body)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return axum::http::StatusCode::NOT_FOUND.into_response();
    };
    (
        [
            (header::CONTENT_TYPE, *kind),
            (header::CACHE_CONTROL, "no-store"),
        ],
        *body,
    )
        .into_response()
}

/// Adds the security headers to a response (any set before are replaced).
pub async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_no_inline_script_style_or_handler() {
        let page = PAGE.to_ascii_lowercase();
        for inline in ["<script>", "<style", " style=", "javascript:", "http-equiv"] {
            assert!(!page.contains(inline), "the page contains `{inline}`");
        }
        let handler = regex::Regex::new(r"<[^>]*\son[a-z]+\s*=").expect("regex");
        assert!(
            !handler.is_match(&page),
            "the page has an inline event handler"
        );
        assert!(page.contains(r#"<script src="app.js" defer></script>"#));
        assert!(page.contains(r#"<link rel="stylesheet" href="app.css">"#));
        assert!(!SCRIPT.contains(".style") && !SCRIPT.contains("innerHTML"));
        for (name, kind, body) in ASSETS {
            // Linked relatively, like app.js, so that the page works under a prefix.
            let link = if kind == CSS {
                format!(r#"<link rel="stylesheet" href="{name}">"#)
            } else {
                assert!(
                    !body.contains(".style")
                        && !body.contains("innerHTML")
                        && !body.contains("insertAdjacentHTML")
                        && !body.contains("eval("),
                    "{name} sets a style or parses HTML"
                );
                format!(r#"<script src="{name}" defer></script>"#)
            };
            assert!(page.contains(&link), "the page does not link {name}");
        }
    }
}
