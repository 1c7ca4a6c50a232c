//! Removals the driver decided on outlive the plugin process: a failed StartTask's unit, or a
//! destroyed task's, whose removal is retried in the background because systemd could not be
//! reached. Each is recorded (root-only, beside the environment files, see
//! [`Systemd::persist_removal`]) before its retry loop starts and forgotten once the unit is
//! gone; a new plugin process resumes every recorded removal when it is configured for real
//! (SetConfig with Nomad's agent config, or Init), before Nomad can send it a task call.
//!
//! Only units Nomad can no longer recover are ever recorded: a failed StartTask gave Nomad no
//! handle, and a destroyed task is forgotten by Nomad (DestroyTask errors are ignored, never
//! retried). While a removal is pending, a StartTask of the same unit is refused recoverably
//! (`driver/start.rs`), so a resumed removal never takes a unit a later task started.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Driver;
use crate::systemd::Systemd;
use crate::vocab::Mode;

const HEADER: &str = "nomad-driver-systemd removal v1";

fn encode(unit: &str, mode: Mode, dropin: bool) -> String {
    let mode = match mode {
        Mode::Transient => "transient",
        Mode::Unit => "unit",
    };
    let dropin = if dropin { "yes" } else { "no" };
    format!("{HEADER}\nunit={unit}\nmode={mode}\ndropin={dropin}\n")
}

fn decode(text: &str) -> Option<(String, Mode, bool)> {
    let mut lines = text.lines();
    if lines.next()? != HEADER {
        return None;
    }
    let unit = lines.next()?.strip_prefix("unit=")?;
    let mode = match lines.next()?.strip_prefix("mode=")? {
        "transient" => Mode::Transient,
        "unit" => Mode::Unit,
        _ => return None,
    };
    let dropin = match lines.next()?.strip_prefix("dropin=")? {
        "yes" => true,
        "no" => false,
        _ => return None,
    };
    let valid_unit = unit.ends_with(".service")
        && unit.len() <= 256
        && unit.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
    (valid_unit && lines.next().is_none()).then(|| (unit.to_string(), mode, dropin))
}

impl<S: Systemd> Driver<S> {
    /// Records that `unit`'s removal is pending (see the module comment).
    pub(super) fn record_removal(&self, unit: &str, mode: Mode, dropin: bool) {
        if let Err(e) = self.sd.persist_removal(unit, &encode(unit, mode, dropin)) {
            tracing::warn!(unit, error = %e, "recording the pending removal failed");
        }
    }

    /// Resumes the removals a previous plugin process recorded and did not finish; once per
    /// process (later calls do nothing).
    pub fn resume_removals(self: &Arc<Self>) {
        if self.removals_resumed.swap(true, Ordering::SeqCst) {
            return;
        }
        for record in self.sd.pending_removals() {
            match decode(&record) {
                Some((unit, mode, dropin)) => {
                    tracing::info!(
                        unit,
                        "resuming the removal of a unit a previous plugin left"
                    );
                    self.retry_removal(&unit, mode, dropin);
                }
                None => tracing::warn!(record, "ignoring an unreadable removal record"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bad_ones_are_refused() {
        for (unit, mode, dropin) in [
            ("nomad-a.service", Mode::Transient, false),
            ("web@x.service", Mode::Unit, true),
        ] {
            assert_eq!(
                decode(&encode(unit, mode, dropin)),
                Some((unit.to_string(), mode, dropin))
            );
        }
        for bad in [
            "",
            "unit=a.service\nmode=unit\ndropin=yes\n",
            &format!("{HEADER}\nunit=../x.service\nmode=unit\ndropin=yes\n"),
            &format!("{HEADER}\nunit=a.socket\nmode=unit\ndropin=yes\n"),
            &format!("{HEADER}\nunit=a.service\nmode=both\ndropin=yes\n"),
            &format!("{HEADER}\nunit=a.service\nmode=unit\ndropin=yes\nmore\n"),
        ] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }
}
