//! The operator CLI: `validate` (judge job files as the plugin would), `list` (the units the
//! driver manages on this host) and `schema` (the plugin config's keys), plus the small output helpers they share.

pub mod interp;
pub mod job;
pub mod list;
pub mod run;
pub mod schema;
pub mod validate;

use std::io::Write;

use crate::logging::civil_from_days;

/// Environment variable that redirects systemd's runtime dir (drop-ins), as in plugin mode.
pub const RUNTIME_DIR_ENV: &str = "NOMAD_DRIVER_SYSTEMD_RUNTIME_DIR";
/// Where systemd keeps runtime unit files (drop-ins for unit mode go below `system/`).
pub const DEFAULT_RUNTIME_DIR: &str = "/run/systemd";
/// Where the cgroup hierarchies are mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// A line on stdout; a closed pipe (`| head`) is not an error worth a panic.
pub fn say(text: &str) {
    let _ = writeln!(std::io::stdout(), "{text}");
}

/// A line on stderr.
pub fn say_err(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// A left-aligned text table with a header row.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                let pad = w - cell.chars().count();
                out.push_str(cell);
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// Bytes as `512B`, `1.5K`, `12.0M`, `3.2G` (binary units, as systemctl prints them).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["K", "M", "G", "T", "P"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut unit = 0;
    let mut scaled = bytes;
    while scaled >= 1024 * 1024 && unit + 1 < UNITS.len() {
        scaled /= 1024;
        unit += 1;
    }
    // one decimal from integer arithmetic: scaled is < 1024² here
    let tenths = scaled * 10 / 1024;
    format!("{}.{}{}", tenths / 10, tenths % 10, UNITS[unit])
}

/// CPU time in nanoseconds as `850ms`, `12.345s`, `1h02m`.
pub fn human_cpu(nsec: u64) -> String {
    let ms = nsec / 1_000_000;
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = ms / 1000;
    if secs < 3600 {
        return format!("{secs}.{:03}s", ms % 1000);
    }
    format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60)
}

/// systemd's major version on this host's system bus, if systemd answers within two seconds.
pub fn host_systemd_version() -> Option<u32> {
    use crate::systemd::{DbusSystemd, Systemd, major_version};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let sd = DbusSystemd::new(DEFAULT_RUNTIME_DIR);
    let version = runtime.block_on(async {
        tokio::time::timeout(std::time::Duration::from_secs(2), sd.version()).await
    });
    sd.close();
    major_version(&version.ok()?.ok()?)
}

/// µs since the epoch as RFC 3339 UTC (`2025-01-31T23:59:59Z`); `None` for 0 (unknown).
pub fn utc_timestamp(usec: u64) -> Option<String> {
    if usec == 0 {
        return None;
    }
    let secs = usec / 1_000_000;
    let days = i64::try_from(secs / 86_400).ok()?;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    Some(format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_rfc3339() {
        let cases = [
            (0, None),
            (1_000_000, Some("1970-01-01T00:00:01Z")),
            (951_782_400_000_000, Some("2000-02-29T00:00:00Z")),
            (1_738_367_999_000_000, Some("2025-01-31T23:59:59Z")),
            (4_107_542_400_000_000, Some("2100-03-01T00:00:00Z")),
        ];
        for (usec, want) in cases {
            assert_eq!(utc_timestamp(usec).as_deref(), want, "{usec}");
        }
    }

    #[test]
    fn sizes_and_times_read_like_systemctl() {
        let bytes = [
            (0, "0B"),
            (1023, "1023B"),
            (1536, "1.5K"),
            (12 << 20, "12.0M"),
            (3 << 30, "3.0G"),
        ];
        for (n, want) in bytes {
            assert_eq!(human_bytes(n), want);
        }
        let cpu = [
            (850_000_000, "850ms"),
            (12_345_000_000, "12.345s"),
            (3_720_000_000_000, "1h02m"),
        ];
        for (n, want) in cpu {
            assert_eq!(human_cpu(n), want);
        }
    }

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["A", "LONG HEADER", "Z"],
            &[vec!["xyz".into(), "1".into(), "end".into()]],
        );
        assert_eq!(t, "A    LONG HEADER  Z\nxyz  1            end");
    }
}
