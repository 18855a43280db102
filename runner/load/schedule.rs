//! Reading `schedule:` — in a runbook, or an entry of a schedules file.

use std::time::Duration;

use crate::diag::Diagnostic;
use crate::load::fields::{Fields, suggest};
use crate::schedule::{CatchUp, Overlap, ScheduleSpec, parse_cron, parse_timezone};
use crate::yaml::{Map, Node};

/// Fields of a schedule.
pub const SCHEDULE_FIELDS: &[&str] = &[
    "name", "cron", "timezone", "params", "overlap", "catch_up", "window",
];

/// Reads one schedule from a mapping; `extra` names further allowed fields (`runbook` in a
/// schedules file). `params` (when given) are the declared parameters the values must name.
pub fn schedule_spec(
    f: &mut Fields,
    map: &Map,
    extra: &[&str],
    params: Option<&[String]>,
) -> Option<ScheduleSpec> {
    let mut allowed = SCHEDULE_FIELDS.to_vec();
    allowed.extend_from_slice(extra);
    f.known_keys(map, &allowed, "a schedule");
    let name = map
        .get("name")
        .and_then(|n| f.string(n, "`name`"))
        .map(|s| s.text.clone());
    let (cron, cron_text) = match map.get("cron") {
        Some(n) => {
            let s = f.string(n, "`cron`")?;
            match parse_cron(&s.text) {
                Ok(c) => (c, s.text.clone()),
                Err(e) => {
                    f.error(n, e);
                    return None;
                }
            }
        }
        None => {
            f.push(
                Diagnostic::new(map.pos, 1, "a schedule needs a `cron` expression")
                    .help("e.g. `cron: \"0 3 * * *\"` (03:00 every day)"),
            );
            return None;
        }
    };
    let timezone = match map.get("timezone") {
        Some(n) => {
            let s = f.string(n, "`timezone`")?;
            match parse_timezone(&s.text) {
                Ok(tz) => tz,
                Err(e) => {
                    f.error(n, e);
                    return None;
                }
            }
        }
        None => chrono_tz::UTC,
    };
    let overlap = match map.get("overlap") {
        Some(n) => {
            let s = f.string(n, "`overlap`")?;
            match s.text.as_str() {
                "skip" => Overlap::Skip,
                "queue" => Overlap::Queue,
                "allow" => Overlap::Allow,
                other => {
                    let mut d = Diagnostic::new(
                        s.pos,
                        other.chars().count(),
                        format!("`overlap` is skip, queue or allow, not `{other}`"),
                    );
                    if let Some(g) = suggest(other, ["skip", "queue", "allow"]) {
                        d = d.did_you_mean(g);
                    }
                    f.push(d);
                    return None;
                }
            }
        }
        None => Overlap::Skip,
    };
    let catch_up = match map.get("catch_up") {
        Some(n) => {
            let s = f.string(n, "`catch_up`")?;
            match s.text.as_str() {
                "none" | "false" => CatchUp::None,
                "last" => CatchUp::Last,
                "all" => CatchUp::All,
                other => {
                    f.error(n, format!("`catch_up` is none, last or all, not `{other}`"));
                    return None;
                }
            }
        }
        None => CatchUp::Last,
    };
    let window = match map.get("window") {
        Some(n) => f.duration(n, "`window`")?,
        None => Duration::from_secs(24 * 3600),
    };
    let params = match map.get("params") {
        Some(n) => {
            let m = f.map(n, "`params`")?;
            if let Some(declared) = params {
                for (k, _) in &m.entries {
                    if !declared.contains(&k.text) {
                        let mut d = Diagnostic::new(
                            k.pos,
                            k.text.chars().count(),
                            format!("unknown parameter `{}`", k.text),
                        );
                        if let Some(g) = suggest(&k.text, declared.iter().map(String::as_str)) {
                            d = d.did_you_mean(g);
                        }
                        f.push(d);
                    }
                }
            }
            m.entries
                .iter()
                .map(|(k, v)| (k.text.clone(), v.to_json()))
                .collect()
        }
        None => serde_json::Map::new(),
    };
    Some(ScheduleSpec {
        name,
        cron,
        cron_text,
        timezone,
        params,
        overlap,
        catch_up,
        window,
        pos: map.pos,
    })
}

/// Reads a runbook's `schedule:` — one schedule, or a list of them.
pub fn runbook_schedules(f: &mut Fields, node: &Node, params: &[String]) -> Vec<ScheduleSpec> {
    match node {
        Node::Seq(s) => s
            .items
            .iter()
            .filter_map(|item| {
                let m = f.map(item, "a schedule")?;
                schedule_spec(f, m, &[], Some(params))
            })
            .collect(),
        other => match f.map(other, "`schedule`") {
            Some(m) => schedule_spec(f, m, &[], Some(params)).into_iter().collect(),
            None => Vec::new(),
        },
    }
}
