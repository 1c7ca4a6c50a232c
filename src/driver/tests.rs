//! Driver-core semantics against the fake systemd, in milliseconds.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::config::TaskUserConfig;
use crate::systemd::{FakeSystemd, KillWho};
use crate::task::TaskSpec;
use crate::unit::name::unit_name;

const ALLOC: &str = "8f3c2d1e-1111-2222-3333-444455556666";

fn spec(suffix: &str) -> TaskSpec {
    TaskSpec {
        id: format!("{ALLOC}/web/{suffix}"),
        name: "web".into(),
        alloc_id: ALLOC.into(),
        alloc_dir: "/var/lib/nomad/alloc/x".into(),
        stdout_path: "/dev/null".into(),
        stderr_path: "/dev/null".into(),
        ..TaskSpec::default()
    }
}

fn command() -> TaskUserConfig {
    TaskUserConfig {
        command: Some("/bin/sleep".into()),
        args: vec!["100".into()],
        ..TaskUserConfig::default()
    }
}

fn driver() -> (Arc<Driver<FakeSystemd>>, FakeSystemd) {
    let fake = FakeSystemd::new();
    (Driver::new(fake.clone(), "/nonexistent"), fake)
}

fn unit(suffix: &str) -> String {
    unit_name(ALLOC, "web", suffix)
}

async fn started(d: &Arc<Driver<FakeSystemd>>, suffix: &str) -> Handle {
    d.start(spec(suffix), command()).await.unwrap()
}

#[tokio::test]
async fn start_then_exit_reports_the_code_to_every_waiter() {
    let (d, fake) = driver();
    let h = started(&d, "00000001").await;
    assert_eq!(h.state.unit, unit("00000001"));
    let early = tokio::spawn({
        let d = Arc::clone(&d);
        async move { d.wait(&spec("00000001").id).await }
    });
    tokio::task::yield_now().await;
    fake.exit(&unit("00000001"), 3);
    let r = early.await.unwrap().unwrap();
    assert_eq!((r.exit_code, r.signal), (3, 0));
    // a late waiter gets the stored result
    let late = d.wait(&spec("00000001").id).await.unwrap();
    assert_eq!(late.exit_code, 3);
}

#[tokio::test]
async fn duplicate_ids_are_refused() {
    let (d, _) = driver();
    started(&d, "00000002").await;
    let err = d.start(spec("00000002"), command()).await.unwrap_err();
    assert!(matches!(err, DriverError::AlreadyExists(_)), "{err}");
}

#[tokio::test]
async fn unknown_ids() {
    let (d, _) = driver();
    assert!(matches!(d.wait("nope").await, Err(DriverError::NotFound)));
    assert!(matches!(d.inspect("nope"), Err(DriverError::NotFound)));
    d.stop("nope", Duration::from_secs(1), "").await.unwrap();
    d.destroy("nope", true).await.unwrap();
}

#[tokio::test]
async fn stop_sends_the_signal_then_escalates() {
    let (d, fake) = driver();
    started(&d, "00000003").await;
    fake.ignore_signal(&unit("00000003"), libc::SIGTERM);
    d.stop(&spec("00000003").id, Duration::from_millis(50), "SIGTERM")
        .await
        .unwrap();
    let r = d.wait(&spec("00000003").id).await.unwrap();
    assert_eq!((r.signal, r.exit_code), (9, 137));
    let sigs = fake.signals();
    assert_eq!(sigs[0], (unit("00000003"), KillWho::Main, libc::SIGTERM));
    assert_eq!(sigs[1], (unit("00000003"), KillWho::All, libc::SIGKILL));
}

#[tokio::test]
async fn stop_default_signal_and_zero_timeout() {
    let (d, fake) = driver();
    started(&d, "00000004").await;
    d.stop(&spec("00000004").id, Duration::from_secs(5), "")
        .await
        .unwrap();
    assert_eq!(fake.signals()[0].2, DEFAULT_STOP_SIGNAL);
    started(&d, "00000005").await;
    d.stop(&spec("00000005").id, Duration::ZERO, "SIGTERM")
        .await
        .unwrap();
    assert_eq!(
        fake.signals()[1],
        (unit("00000005"), KillWho::All, libc::SIGKILL)
    );
}

#[tokio::test]
async fn destroy_needs_force_while_running_and_forgets() {
    let (d, fake) = driver();
    started(&d, "00000006").await;
    let id = spec("00000006").id;
    assert!(matches!(
        d.destroy(&id, false).await,
        Err(DriverError::StillRunning)
    ));
    d.destroy(&id, true).await.unwrap();
    assert!(matches!(d.inspect(&id), Err(DriverError::NotFound)));
    assert!(fake.loaded_units().is_empty(), "{:?}", fake.loaded_units());
    d.destroy(&id, true).await.unwrap();
}

#[tokio::test]
async fn recover_from_state_alone_and_idempotently() {
    let (d, fake) = driver();
    let h = started(&d, "00000007").await;
    // a new plugin process: same systemd, empty memory
    let d2 = Driver::new(fake.clone(), "/nonexistent");
    let id = spec("00000007").id;
    d2.recover(&id, &h.state.encode()).await.unwrap();
    d2.recover(&id, &h.state.encode()).await.unwrap();
    assert!(matches!(d2.inspect(&id).unwrap().state, TaskState::Running));
    fake.exit(&unit("00000007"), 0);
    assert!(d2.wait(&id).await.unwrap().successful());
}

#[tokio::test]
async fn recover_after_exit_reports_the_real_status() {
    let (d, fake) = driver();
    let h = started(&d, "00000008").await;
    fake.exit(&unit("00000008"), 7);
    let d2 = Driver::new(fake.clone(), "/nonexistent");
    d2.recover("", &h.state.encode()).await.unwrap();
    assert_eq!(d2.wait(&spec("00000008").id).await.unwrap().exit_code, 7);
}

#[tokio::test]
async fn recover_refuses_a_foreign_invocation_or_missing_unit() {
    let (d, fake) = driver();
    let h = started(&d, "00000009").await;
    let mut state = h.state.clone();
    state.invocation_id = "ffff".into();
    let d2 = Driver::new(fake.clone(), "/nonexistent");
    assert!(matches!(
        d2.recover("", &state.encode()).await,
        Err(DriverError::Recover(_))
    ));
    fake.forget(&unit("00000009"));
    assert!(matches!(
        d2.recover("", &h.state.encode()).await,
        Err(DriverError::Recover(_))
    ));
}

#[tokio::test]
async fn a_lost_bus_is_not_an_exit() {
    let (d, fake) = driver();
    started(&d, "0000000a").await;
    let id = spec("0000000a").id;
    fake.set_unreachable(true);
    fake.set_unreachable(false);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(matches!(d.inspect(&id).unwrap().state, TaskState::Running));
    fake.exit(&unit("0000000a"), 1);
    assert_eq!(d.wait(&id).await.unwrap().exit_code, 1);
}

#[tokio::test]
async fn transient_start_failures_leave_nothing_and_are_recoverable() {
    let (d, fake) = driver();
    fake.fail_next_start(crate::systemd::SystemdError::Unreachable("timeout".into()));
    let err = d.start(spec("0000000b"), command()).await.unwrap_err();
    assert!(err.is_recoverable(), "{err}");
    assert!(fake.loaded_units().is_empty());
    assert!(d.task_ids().is_empty());
    fake.fail_next_start(crate::systemd::SystemdError::JobFailed {
        unit: "x".into(),
        result: "failed".into(),
    });
    let err = d.start(spec("0000000c"), command()).await.unwrap_err();
    assert!(!err.is_recoverable(), "{err}");
}

/// systemd killed the process because its start job timed out: a failed StartTask whose unit
/// is gone, not a started task that exited 143.
#[tokio::test]
async fn a_start_job_that_timed_out_fails_the_start() {
    let (d, fake) = driver();
    fake.time_out_next_start();
    let err = d.start(spec("0000001b"), command()).await.unwrap_err();
    assert!(err.to_string().contains("timeout"), "{err}");
    assert!(fake.loaded_units().is_empty());
    assert!(d.task_ids().is_empty());
}

#[tokio::test]
async fn bad_config_names_the_key_and_starts_nothing() {
    let (d, fake) = driver();
    let mut s = spec("0000000d");
    s.user = "root".into();
    let err = d.start(s, command()).await.unwrap_err().to_string();
    assert!(err.starts_with("user:"), "{err}");
    assert!(fake.loaded_units().is_empty());
}

#[tokio::test]
async fn oom_kills_are_reported_with_an_event() {
    let (d, fake) = driver();
    let mut events = d.events();
    started(&d, "0000000e").await;
    fake.die(&unit("0000000e"), 9, "oom-kill");
    let r = d.wait(&spec("0000000e").id).await.unwrap();
    assert!(r.oom_killed);
    let ev = events.recv().await.unwrap();
    assert!(ev.message.contains("OOM"), "{}", ev.message);
    assert_eq!(ev.alloc_id, ALLOC);
}

#[tokio::test]
async fn signals_by_name() {
    let (d, fake) = driver();
    started(&d, "0000000f").await;
    fake.ignore_signal(&unit("0000000f"), libc::SIGUSR1);
    d.signal(&spec("0000000f").id, "SIGUSR1").await.unwrap();
    assert_eq!(
        fake.signals()[0],
        (unit("0000000f"), KillWho::Main, libc::SIGUSR1)
    );
    assert!(matches!(
        d.signal(&spec("0000000f").id, "SIGBOGUS").await,
        Err(DriverError::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn unit_mode_writes_a_dropin_and_removes_it() {
    let (d, fake) = driver();
    d.set_config(
        crate::config::PluginConfig::from_toml("allowed_units = [\"web@*.service\"]").unwrap(),
        None,
    );
    fake.install("web@a1.service");
    let cfg = TaskUserConfig {
        unit: Some("web@a1.service".into()),
        ..TaskUserConfig::default()
    };
    d.start(spec("00000010"), cfg.clone()).await.unwrap();
    let dropin = fake.dropin("web@a1.service").unwrap();
    assert!(dropin.contains("Restart=no"), "{dropin}");
    assert!(dropin.contains("RemainAfterExit=yes"), "{dropin}");
    d.destroy(&spec("00000010").id, true).await.unwrap();
    assert_eq!(fake.dropin("web@a1.service"), None);
    // not allow-listed
    let other = TaskUserConfig {
        unit: Some("db.service".into()),
        ..TaskUserConfig::default()
    };
    let err = d
        .start(spec("00000011"), other)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("allowed_units"), "{err}");
    // allow-listed but not installed: a clean error naming the key, and no drop-in left
    let ghost = TaskUserConfig {
        unit: Some("web@ghost.service".into()),
        ..TaskUserConfig::default()
    };
    let err = d.start(spec("00000012"), ghost).await.unwrap_err();
    assert!(matches!(err, DriverError::InvalidArgument(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "config.unit: web@ghost.service is not installed: systemd has no unit file or template for it"
    );
    assert_eq!(fake.dropin("web@ghost.service"), None);
}

#[tokio::test]
async fn unit_mode_refuses_active_units_it_did_not_start() {
    let (d, fake) = driver();
    d.set_config(
        crate::config::PluginConfig::from_toml("allowed_units = [\"api.service\"]").unwrap(),
        None,
    );
    fake.install("api.service");
    fake.start_unit_now("api.service");
    let cfg = TaskUserConfig {
        unit: Some("api.service".into()),
        ..TaskUserConfig::default()
    };
    let err = d
        .start(spec("00000012"), cfg)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not started by this driver"), "{err}");
    assert!(fake.signals().is_empty());
    assert!(matches!(
        fake.status_now("api.service").map(|s| s.active_state),
        Some(s) if s == "active"
    ));
}

#[tokio::test]
async fn unit_mode_refuses_a_unit_another_task_holds() {
    let (d, fake) = driver();
    let config = || crate::config::PluginConfig::from_toml("allowed_units = [\"api@*.service\"]");
    d.set_config(config().unwrap(), None);
    fake.install("api@shared.service");
    let cfg = TaskUserConfig {
        unit: Some("api@shared.service".into()),
        ..TaskUserConfig::default()
    };
    d.start(spec("00000020"), cfg.clone()).await.unwrap();
    let mine = fake.dropin("api@shared.service").unwrap();
    // a second task naming the same unit: refused, and the first one is left alone
    let err = d
        .start(spec("00000021"), cfg.clone())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("config.unit: api@shared.service is in use by another task (")
            && err.contains(&spec("00000020").id),
        "{err}"
    );
    assert_eq!(fake.dropin("api@shared.service").as_ref(), Some(&mine));
    assert!(fake.signals().is_empty());
    // StartTask retried with the same id by a restarted plugin: the unit is this task's
    let d2 = Driver::new(fake.clone(), "/nonexistent");
    d2.set_config(config().unwrap(), None);
    d2.start(spec("00000020"), cfg.clone()).await.unwrap();
    assert!(fake.signals().is_empty());
    d2.destroy(&spec("00000020").id, true).await.unwrap();
    assert_eq!(fake.dropin("api@shared.service"), None);
    // released: now the other task may have it
    d2.start(spec("00000021"), cfg).await.unwrap();
    assert!(
        fake.dropin("api@shared.service")
            .unwrap()
            .contains(&spec("00000021").id)
    );
}

#[tokio::test]
async fn a_task_that_exits_before_its_start_job_is_started_and_reports_its_exit() {
    let (d, fake) = driver();
    fake.exit_during_next_start(3);
    d.start(spec("00000020"), command()).await.unwrap();
    assert_eq!(d.wait(&spec("00000020").id).await.unwrap().exit_code, 3);
    // systemd's own setup failures (203: exec failed) still fail the start, leaving nothing
    fake.exit_during_next_start(203);
    assert!(d.start(spec("00000021"), command()).await.is_err());
    assert!(d.task_ids().iter().all(|id| !id.ends_with("00000021")));
}

#[tokio::test]
async fn start_refuses_a_property_the_fingerprinted_systemd_lacks() {
    let (d, fake) = driver();
    let mut cfg = command();
    cfg.properties
        .insert("ProtectProc".into(), "invisible".into());
    // before any fingerprint the version is unknown and nothing is refused for it
    d.start(spec("00000001"), cfg.clone()).await.unwrap();
    fake.set_version("245.4-4ubuntu3");
    d.fingerprint().await;
    let err = d
        .start(spec("00000002"), cfg)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "config.properties.ProtectProc: property \"ProtectProc\" needs systemd 247 or newer; the target runs systemd 245"
        ),
        "{err}"
    );
    assert!(fake.properties(&unit("00000002")).is_none());
}

#[tokio::test]
async fn a_start_that_fails_with_the_bus_down_is_cleaned_up_once_it_is_back() {
    let (d, fake) = driver();
    fake.lose_bus_after_next_start();
    let err = d.start(spec("00000040"), command()).await.unwrap_err();
    assert!(err.is_recoverable(), "{err}");
    assert!(d.task_ids().is_empty());
    // the unit was created before the bus went away, and could not be removed yet
    assert_eq!(fake.loaded_units(), vec![unit("00000040")]);
    assert_eq!(d.bookkeeping().cleanups, 1);
    fake.set_unreachable(false);
    for _ in 0..100 {
        if fake.loaded_units().is_empty() && d.bookkeeping().cleanups == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(fake.loaded_units().is_empty(), "{:?}", fake.loaded_units());
    assert!(!fake.has_env_file(&unit("00000040")));
    assert_eq!(d.bookkeeping(), Bookkeeping::default());
}

/// A new plugin process (a second driver on the same systemd) that never recovered the task
/// still stops and destroys it by id: transient units by name, unit mode by drop-in.
#[tokio::test]
async fn stop_and_destroy_of_an_untracked_id_find_the_unit() {
    let (d1, fake) = driver();
    d1.start(spec("00000041"), command()).await.unwrap();
    let d2 = Driver::new(fake.clone(), "/nonexistent");
    let id = spec("00000041").id;
    d2.stop(&id, Duration::from_secs(1), "SIGTERM")
        .await
        .unwrap();
    assert!(
        fake.signals()
            .contains(&(unit("00000041"), KillWho::Main, libc::SIGTERM))
    );
    d2.destroy(&id, true).await.unwrap();
    assert!(fake.loaded_units().is_empty());
    assert!(!fake.has_env_file(&unit("00000041")));
    d2.destroy(&id, true).await.unwrap(); // idempotent

    // unit mode: found by its drop-in, which goes with a reload
    let unit_mode = crate::config::PluginConfig::from_toml("allowed_units = [\"web@*.service\"]");
    d1.set_config(unit_mode.unwrap(), None);
    fake.install("web@b1.service");
    let cfg = TaskUserConfig {
        unit: Some("web@b1.service".into()),
        ..TaskUserConfig::default()
    };
    d1.start(spec("00000042"), cfg).await.unwrap();
    assert!(fake.dropin("web@b1.service").is_some());
    let reloads = fake.reload_count();
    // not forced: a running task is refused
    assert!(matches!(
        d2.destroy(&spec("00000042").id, false).await,
        Err(DriverError::StillRunning)
    ));
    d2.destroy(&spec("00000042").id, true).await.unwrap();
    assert_eq!(fake.dropin("web@b1.service"), None);
    assert!(
        fake.reload_count() > reloads,
        "the removed drop-in was not reloaded away"
    );
    assert!(
        fake.status_now("web@b1.service")
            .is_none_or(|s| s.is_dead())
    );
    assert!(!fake.has_env_file("web@b1.service"));
    // another task's unit is never touched
    assert!(
        d2.destroy(&format!("{ALLOC}/web/00000043"), true)
            .await
            .is_ok()
    );
}

/// DestroyTask of a tracked unit-mode task reloads after removing the drop-in, so systemd
/// forgets its settings.
#[tokio::test]
async fn destroying_a_unit_mode_task_reloads_its_dropin_away() {
    let (d, fake) = driver();
    d.set_config(
        crate::config::PluginConfig::from_toml("allowed_units = [\"web@*.service\"]").unwrap(),
        None,
    );
    fake.install("web@c1.service");
    let cfg = TaskUserConfig {
        unit: Some("web@c1.service".into()),
        ..TaskUserConfig::default()
    };
    d.start(spec("00000044"), cfg).await.unwrap();
    let reloads = fake.reload_count();
    d.destroy(&spec("00000044").id, true).await.unwrap();
    assert_eq!(fake.dropin("web@c1.service"), None);
    assert!(fake.reload_count() > reloads);
}

/// Nomad ignores DestroyTask errors and never repeats the call: a destroy that cannot reach
/// systemd answers a recoverable error, forgets the task and removes the unit once it can.
#[tokio::test]
async fn a_destroy_with_the_bus_down_finishes_once_it_is_back() {
    let (d, fake) = driver();
    started(&d, "00000045").await;
    fake.exit(&unit("00000045"), 0);
    let id = spec("00000045").id;
    assert_eq!(d.wait(&id).await.unwrap().exit_code, 0);
    fake.set_unreachable(true);
    let err = d.destroy(&id, true).await.unwrap_err();
    assert!(err.is_recoverable(), "{err}");
    assert!(d.task_ids().is_empty());
    assert_eq!(d.bookkeeping().cleanups, 1);
    fake.set_unreachable(false);
    for _ in 0..100 {
        if fake.loaded_units().is_empty() && d.bookkeeping().cleanups == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(fake.loaded_units().is_empty(), "{:?}", fake.loaded_units());
    assert!(!fake.has_env_file(&unit("00000045")));
    assert_eq!(d.bookkeeping(), Bookkeeping::default());
}

#[tokio::test]
async fn a_forced_destroy_of_a_running_task_with_the_bus_down_finishes_once_it_is_back() {
    let (d, fake) = driver();
    started(&d, "00000046").await;
    fake.set_unreachable(true);
    let err = d.destroy(&spec("00000046").id, true).await.unwrap_err();
    assert!(err.is_recoverable(), "{err}");
    assert!(d.task_ids().is_empty());
    fake.set_unreachable(false);
    for _ in 0..100 {
        if fake.loaded_units().is_empty() && d.bookkeeping().cleanups == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(fake.loaded_units().is_empty(), "{:?}", fake.loaded_units());
    assert_eq!(d.bookkeeping(), Bookkeeping::default());
}
