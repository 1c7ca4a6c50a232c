//! Plugin exec → handshake.

use crate::*;

pub(crate) async fn handshake(counts: &Counts, figures: &mut Vec<Figure>) -> R<()> {
    let n = counts.handshakes;
    eprintln!("handshake: {n} plugin launches beside {n} execs of /bin/true");
    let mut plugin = Vec::new();
    let mut base = Vec::new();
    for _ in 0..n {
        let p = Plugin::launch(&[]).await;
        plugin.push(p.handshake_time);
        if !p.kill().await {
            return Err("a freshly launched plugin did not exit gracefully".into());
        }
        let t = std::time::Instant::now();
        let status = std::process::Command::new("/bin/true")
            .status()
            .map_err(|e| format!("/bin/true: {e}"))?;
        base.push(t.elapsed());
        if !status.success() {
            return Err("/bin/true failed".into());
        }
    }
    let (p, q) = (ms(percentile(&plugin, 50)), ms(percentile(&base, 50)));
    figures.push(
        Figure::new(format!("plugin exec → handshake, median of {n}"), "ms", p)
            .baseline("exec of /bin/true", q)
            .target("≤ 50 ms", p <= 50.0),
    );
    Ok(())
}
