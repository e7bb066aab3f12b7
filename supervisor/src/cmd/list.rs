//! `pallium list`: running sessions with their profile, index, supervisor pid,
//! hops and uptime.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;

use crate::session;

pub(crate) fn list() -> Result<i32> {
    let sessions = session::list_all()?;
    if sessions.is_empty() {
        println!("no running sessions");
        return Ok(0);
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let rows: Vec<[String; 5]> = sessions
        .iter()
        .map(|s| {
            let hops = if s.hops.is_empty() {
                "(direct)".to_string()
            } else {
                s.hops.join(" → ")
            };
            [
                s.profile.clone(),
                s.index.to_string(),
                s.supervisor_pid.to_string(),
                hops,
                uptime(now.saturating_sub(s.started_unix)),
            ]
        })
        .collect();
    print_table(&["PROFILE", "SESSION", "PID", "HOPS", "UPTIME"], &rows);
    Ok(0)
}

fn uptime(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Columns padded to their widest cell, separated by " | " as the original.
pub(crate) fn print_table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) {
    let mut w: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect();
        println!("{}", padded.join(" | ").trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}
