//! The web page `serve` shows at `/`: the runs, a run's step tree updating live with each
//! step's output and the run's timeline, the gate prompt with approve and reject buttons, and
//! the run controls; at `/new` the catalogue of runbooks with a start form, and the history and
//! schedules views (at [`VIEWS`]). Files embedded in the binary (no build step, no external
//! assets): the page, its scripts ([`SCRIPT`] and those beside it, [`SCRIPTS`]), its styles
//! ([`STYLE`]) and the run controls', history's and schedules' files ([`ASSETS`]); it talks to
//! the API with the token the user enters.
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

/// The page's other scripts, each a part of the page in a file of its own that registers with
/// [`SCRIPT`]: the catalogue and start form, a step's output, the run's timeline.
pub const SCRIPTS: &[(&str, &str)] = &[
    ("start.js", include_str!("web/start.js")),
    ("output.js", include_str!("web/output.js")),
    ("timeline.js", include_str!("web/timeline.js")),
];

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

/// The page (at `/`, `/runs/{id}` and `/new`).
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

/// One of [`SCRIPTS`] (served beside `/` and beside `/runs/{id}`), as a handler's answer.
pub fn javascript(text: &'static str) -> std::future::Ready<Response> {
    std::future::ready(
        (
            [
                (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            text,
        )
            .into_response(),
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
        // Every script of the page (app.js, SCRIPTS, the scripts of ASSETS) is linked
        // relatively, like app.js, so that the page works under a prefix, and neither sets a
        // style nor parses HTML.
        let scripts = std::iter::once(("app.js", SCRIPT))
            .chain(SCRIPTS.iter().copied())
            .chain(
                ASSETS
                    .iter()
                    .filter(|(_, kind, _)| *kind == JS)
                    .map(|&(name, _, body)| (name, body)),
            );
        for (name, script) in scripts {
            for unsafe_sink in [
                ".style",
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "eval(",
            ] {
                assert!(!script.contains(unsafe_sink), "{name} uses `{unsafe_sink}`");
            }
            assert!(
                page.contains(&format!(r#"<script src="{name}" defer></script>"#)),
                "the page does not load {name}"
            );
        }
        for (name, _, _) in ASSETS.iter().filter(|(_, kind, _)| *kind == CSS) {
            assert!(
                page.contains(&format!(r#"<link rel="stylesheet" href="{name}">"#)),
                "the page does not link {name}"
            );
        }
        // What the page is never to keep of a secret typed into a form.
        for (name, script) in SCRIPTS {
            assert!(!script.contains("localStorage"), "{name} uses localStorage");
        }
    }
}
