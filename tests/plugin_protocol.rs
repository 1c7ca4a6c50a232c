//! The real binary, launched the way a Nomad 2.0 agent launches it, against a real
//! private systemd (or none).

mod common;

use std::time::Duration;

use common::plugin::{Plugin, nomad_command};
use common::systemd::{PrivateSystemd, require};
use nomad_driver_systemd::proto::base::{
    ConfigSchemaRequest, NomadConfig, NomadDriverConfig, PluginInfoRequest, PluginType,
    SetConfigRequest,
};
use nomad_driver_systemd::proto::drivers::fingerprint_response::HealthState;
use nomad_driver_systemd::proto::drivers::{
    CapabilitiesRequest, FingerprintRequest, InitRequest, TaskConfigSchemaRequest,
    TaskEventsRequest, driver_capabilities,
};
use nomad_driver_systemd::proto::hclspec::spec::Block;

/// cty-msgpack of the plugin config defaults as Nomad applies them (the bytes a Nomad agent sends for an empty config block).
const DEFAULTS: &str = "87aa616c6c6f775f726f6f74c2b2616c6c6f7765645f70726f7065727469657390ad616c6c6f7765645f756e69747390ac64656661756c745f75736572a0b164656e6965645f70726f7065727469657390a7656e61626c6564c3a5736c696365b16e6f6d61645f7461736b732e736c696365";

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// `{"enabled": false}` with the other keys nil.
fn disabled() -> Vec<u8> {
    let mut v = Vec::new();
    let map = rmpv::Value::Map(vec![(
        rmpv::Value::from("enabled"),
        rmpv::Value::from(false),
    )]);
    rmpv::encode::write_value(&mut v, &map).unwrap();
    v
}

fn set_config(bytes: Vec<u8>, with_nomad: bool) -> SetConfigRequest {
    SetConfigRequest {
        msgpack_config: bytes,
        nomad_config: with_nomad.then_some(NomadConfig {
            driver: Some(NomadDriverConfig {
                client_max_port: 14512,
                client_min_port: 14000,
                topology: None,
            }),
        }),
        plugin_api_version: "v0.1.0".into(),
    }
}

#[test]
fn without_the_cookie_it_explains_itself_and_exits_1() {
    let out = std::process::Command::new(common::plugin::binary())
        .env_remove(common::plugin::COOKIE_KEY)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("plugin for HashiCorp Nomad"), "{err}");
}

#[test]
fn a_wrong_protocol_version_is_refused() {
    let out = nomad_command(&[("PLUGIN_PROTOCOL_VERSIONS", "1".into())])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
}

/// Nomad's agent gives the plugin the soft `RLIMIT_NOFILE` it was itself started with
/// (Go's `syscall` restores it for the processes it starts); the plugin raises it to the hard
/// limit, and says so.
#[tokio::test]
async fn the_plugin_raises_its_soft_open_file_limit_to_the_hard_limit() {
    use std::os::unix::process::CommandExt;
    let mut cmd = nomad_command(&[]);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
            lim.rlim_cur = lim.rlim_max.min(256);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            Ok(())
        });
    }
    let p = Plugin::launch_command(cmd).await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", p.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let nums: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    println!("{line}");
    assert!(
        nums[1] > 256,
        "the hard limit must be above 256 for this test: {line}"
    );
    assert_eq!(nums[0], nums[1], "soft limit not raised: {line}");
    // the line was written before the handshake, but a thread of ours reads stderr: give it
    // time on a busy machine
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !p.stderr_text().contains("raised the soft RLIMIT_NOFILE")
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        p.stderr_text().contains("raised the soft RLIMIT_NOFILE"),
        "{}",
        p.stderr_text()
    );
    assert!(p.kill().await);
}

#[tokio::test]
async fn agent_start_sequence_three_launches() {
    if !require() {
        return;
    }
    let sd = PrivateSystemd::start();
    let env = [("DBUS_SYSTEM_BUS_ADDRESS", sd.bus_address())];

    // Launch 1: fingerprint the plugin binary.
    let p = Plugin::launch(&env).await;
    println!("handshake after {:?}", p.handshake_time);
    let info = p
        .base()
        .plugin_info(PluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.r#type, PluginType::Driver as i32);
    assert_eq!(info.plugin_api_versions, ["v0.1.0"]);
    assert_eq!(info.name, "systemd");
    assert_eq!(info.plugin_version, env!("CARGO_PKG_VERSION"));
    let schema = p
        .base()
        .config_schema(ConfigSchemaRequest {})
        .await
        .unwrap()
        .into_inner();
    let Some(Block::Object(obj)) = schema.spec.and_then(|s| s.block) else {
        panic!("plugin schema must be an object")
    };
    for key in [
        "enabled",
        "slice",
        "allowed_units",
        "allowed_properties",
        "denied_properties",
        "default_user",
        "allow_root",
    ] {
        assert!(obj.attributes.contains_key(key), "schema lacks {key}");
    }
    assert!(p.kill().await, "launch 1 did not exit gracefully");

    // Launch 2: config validation, SetConfig twice without nomad_config.
    let p = Plugin::launch(&env).await;
    for _ in 0..2 {
        p.base()
            .set_config(set_config(hex(DEFAULTS), false))
            .await
            .unwrap();
    }
    assert!(p.kill().await, "launch 2 did not exit gracefully");
    assert!(
        sd.nomad_units().is_empty(),
        "validation launches must have no side effects"
    );

    // Launch 3: long-lived.
    let p = Plugin::launch(&env).await;
    p.base()
        .set_config(set_config(hex(DEFAULTS), true))
        .await
        .unwrap();
    p.driver().init(InitRequest {}).await.unwrap();
    let schema = p
        .driver()
        .task_config_schema(TaskConfigSchemaRequest {})
        .await
        .unwrap()
        .into_inner();
    let Some(Block::Object(obj)) = schema.spec.and_then(|s| s.block) else {
        panic!("task schema must be an object")
    };
    assert!(matches!(
        obj.attributes["properties"].block,
        Some(Block::BlockAttrs(_))
    ));
    let caps = p
        .driver()
        .capabilities(CapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    let caps = caps.capabilities.expect("capabilities must always be set");
    assert_eq!(
        caps.fs_isolation,
        driver_capabilities::FsIsolation::Image as i32
    );
    assert!(caps.send_signals);
    let mut fp = p
        .driver()
        .fingerprint(FingerprintRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(2), fp.message())
        .await
        .expect("first fingerprint within 2 s")
        .unwrap()
        .unwrap();
    assert_eq!(first.health, HealthState::Healthy as i32, "{first:?}");
    assert_eq!(first.health_description, "Healthy");
    let attr = |k: &str| {
        first.attributes.get(k).and_then(|a| match &a.value {
            Some(nomad_driver_systemd::proto::structs::attribute::Value::StringVal(s)) => {
                Some(s.clone())
            }
            _ => None,
        })
    };
    assert!(
        attr("driver.systemd.version").is_some_and(|v| v.starts_with("25")),
        "{first:?}"
    );
    assert!(attr("driver.systemd.cgroup").is_some(), "{first:?}");
    let mut events = p
        .driver()
        .task_events(TaskEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    // both streams stay open
    assert!(
        tokio::time::timeout(Duration::from_millis(300), fp.message())
            .await
            .is_err()
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), events.message())
            .await
            .is_err()
    );
    assert!(p.kill().await, "launch 3 did not exit gracefully");
}

#[tokio::test]
async fn fingerprint_is_unhealthy_without_a_bus_and_undetected_when_disabled() {
    let env = [(
        "DBUS_SYSTEM_BUS_ADDRESS",
        "unix:path=/nonexistent/bus".to_string(),
    )];
    let p = Plugin::launch(&env).await;
    p.base()
        .set_config(set_config(hex(DEFAULTS), true))
        .await
        .unwrap();
    let mut fp = p
        .driver()
        .fingerprint(FingerprintRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = fp.message().await.unwrap().unwrap();
    assert_eq!(first.health, HealthState::Unhealthy as i32);
    assert!(
        first.health_description.contains("not reachable"),
        "{}",
        first.health_description
    );
    assert!(p.kill().await);

    let p = Plugin::launch(&env).await;
    p.base()
        .set_config(set_config(disabled(), true))
        .await
        .unwrap();
    let mut fp = p
        .driver()
        .fingerprint(FingerprintRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = fp.message().await.unwrap().unwrap();
    assert_eq!(first.health, HealthState::Undetected as i32);
    assert!(p.kill().await);
}

#[tokio::test]
async fn a_malformed_config_is_refused_naming_the_key() {
    let p = Plugin::launch(&[]).await;
    let bad = |k: &str, v: rmpv::Value| {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, &rmpv::Value::Map(vec![(rmpv::Value::from(k), v)]))
            .unwrap();
        out
    };
    for (bytes, key) in [
        (bad("slice", rmpv::Value::from("nomad.slice")), "slice"),
        (bad("enabled", rmpv::Value::from("yes")), "enabled"),
        (bad("allowed_units", rmpv::Value::from(3)), "allowed_units"),
        (bad("allow_rooot", rmpv::Value::from(true)), "allow_rooot"),
        (vec![0xc1], "msgpack"),
    ] {
        let err = p
            .base()
            .set_config(set_config(bytes, false))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains(key), "{key}: {}", err.message());
    }
    assert!(p.kill().await);
}

#[tokio::test]
async fn handshake_time_over_launches() {
    let mut times = Vec::new();
    for _ in 0..5 {
        let p = Plugin::launch(&[]).await;
        times.push(p.handshake_time);
        assert!(p.kill().await);
    }
    times.sort();
    println!(
        "plugin exec → handshake: median {:?} (min {:?}, max {:?})",
        times[2], times[0], times[4]
    );
}
