//! Small measurement helpers: percentiles, process RSS and CPU time, bounded RPCs, callers.

use crate::*;

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Nearest-rank percentile of unsorted samples.
pub(crate) fn percentile(samples: &[Duration], pct: usize) -> Duration {
    let mut s = samples.to_vec();
    s.sort();
    if s.is_empty() {
        return Duration::ZERO;
    }
    let rank = (pct * s.len()).div_ceil(100).max(1);
    s[rank.min(s.len()) - 1]
}

/// A `kB` field of `/proc/<pid>/status`, in MiB.
pub(crate) fn rss_mib(pid: u32) -> R<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    let kb = text
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or(format!("no VmRSS in /proc/{pid}/status"))?;
    Ok(kb as f64 / 1024.0)
}

/// utime + stime of a process, in seconds.
pub(crate) fn cpu_seconds(pid: u32) -> R<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    let after_comm = text.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    let (Some(utime), Some(stime)) = (tick(11), tick(12)) else {
        return Err(format!("cannot parse /proc/{pid}/stat"));
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Ok((utime + stime) as f64 / hz.max(1) as f64)
}

pub(crate) async fn timed<T>(fut: impl Future<Output = R<T>>) -> R<(T, Duration)> {
    let t = Instant::now();
    let v = fut.await?;
    Ok((v, t.elapsed()))
}

/// Awaits an RPC for at most [`RPC_TIMEOUT`], naming it in the error.
pub(crate) async fn rpc<T>(
    what: &str,
    fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> R<T> {
    match tokio::time::timeout(RPC_TIMEOUT, fut).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(format!("{what}: {:?}: {}", s.code(), s.message())),
        Err(_) => Err(format!("{what} hung for {} s", RPC_TIMEOUT.as_secs())),
    }
}

/// Runs `f` over `items` with `callers` concurrent callers; every result, in completion order.
pub(crate) async fn concurrently<I, T, F, Fut>(items: Vec<I>, callers: usize, f: F) -> Vec<R<T>>
where
    F: Fn(I) -> Fut,
    Fut: Future<Output = R<T>>,
{
    futures::stream::iter(items.into_iter().map(f))
        .buffer_unordered(callers)
        .collect()
        .await
}

/// Fails with a summary of distinct errors when any result is an error.
pub(crate) fn all_ok<T>(what: &str, results: Vec<R<T>>) -> R<Vec<T>> {
    let total = results.len();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    let mut ok = Vec::new();
    for r in results {
        match r {
            Ok(v) => ok.push(v),
            Err(e) => *errors.entry(e).or_default() += 1,
        }
    }
    if errors.is_empty() {
        return Ok(ok);
    }
    let failed: usize = errors.values().sum();
    let list: Vec<String> = errors.iter().map(|(e, n)| format!("  {n}× {e}")).collect();
    Err(format!(
        "{what}: {failed} of {total} failed:\n{}",
        list.join("\n")
    ))
}
