//! The web page `serve` shows at `/`: the runs, a run's step tree updating live, and the gate
//! prompt with approve and reject buttons. One self-contained HTML file (no build step, no
//! external assets); it talks to the API with the token the user enters.

/// The page.
pub const PAGE: &str = include_str!("web/index.html");
