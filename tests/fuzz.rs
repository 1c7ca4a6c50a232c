//! Randomized tests of every parser that takes job or agent input: the cty-msgpack decoding of
//! the task and plugin configs, the property parsers, the plugin's durations, the unit-name
//! scheme, and the shell form of an argv. Deterministic (a fixed seed), so a failure
//! reproduces; `NDS_FUZZ_ITERS` sets the number of cases per parser (default 3,000),
//! `NDS_FUZZ_SEED` the seed.
//!
//! The kept corpus, `tests/fuzz-corpus/<parser>/` (one input per file; `property/` files are
//! `Name=value`), is replayed by [`the_kept_corpus_replays`] with the same checks, on a thread
//! with a tokio worker's stack (2 MiB), where the plugin parses: inputs that once broke
//! something, or that are shaped to (allocation bombs, deep nesting, overflows), stay tested.

use std::panic::{AssertUnwindSafe, catch_unwind};

use nomad_driver_systemd::config::{PluginConfig, TaskUserConfig, duration};
use nomad_driver_systemd::nomad_standin::alloc::JobConfig;
use nomad_driver_systemd::properties::{PROPERTIES, dropin_line, to_dbus};
use nomad_driver_systemd::unit::name::{
    escape, parse_unit_name, unescape, unit_name, unit_of_task_id, valid_unit_name,
};
use nomad_driver_systemd::unit::plan::exec_argv;

/// xorshift64*: small, fast, reproducible.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let seed = std::env::var("NDS_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x9e37_79b9_7f4a_7c15);
        Self(seed | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n.max(1) as u64).unwrap_or(0)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    /// A string of up to `max` pieces from an alphabet of what parsers find hard.
    fn text(&mut self, max: usize) -> String {
        const PIECES: &[&str] = &[
            "a",
            "Z",
            "0",
            "1",
            "9",
            "42",
            "-",
            "+",
            ".",
            "/",
            ":",
            "=",
            " ",
            "\t",
            "\n",
            "\r",
            "\0",
            "\\",
            "\"",
            "'",
            "$",
            "${",
            "}",
            "%",
            "%n",
            ";",
            "#",
            "`",
            "*",
            "?",
            "[",
            "@",
            "ü",
            "☃",
            "\u{202e}",
            "yes",
            "no",
            "true",
            "infinity",
            "100",
            "1G",
            "512M",
            "50%",
            "5s",
            "1min",
            "0",
            "-1",
            "18446744073709551615",
            "4294967296",
            "/dev/null",
            "/tmp",
            "~",
            ",",
            "..",
            "x-y",
            "CAP_",
            "AF_INET",
            "~@",
            "@system-service",
        ];
        let n = self.below(max + 1);
        (0..n).map(|_| *self.pick(PIECES)).collect()
    }
}

fn iterations() -> usize {
    std::env::var("NDS_FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000)
}

/// Runs `f`, failing the test with the input when it panics.
fn no_panic(what: &str, input: &dyn std::fmt::Debug, f: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(f)).is_err() {
        panic!("{what} panicked on {input:?}");
    }
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(6) {
            0 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] = u8::try_from(rng.next() & 0xff).unwrap_or(0);
            }
            1 => {
                let i = rng.below(b.len() + 1);
                b.insert(i, u8::try_from(rng.next() & 0xff).unwrap_or(0));
            }
            2 if !b.is_empty() => {
                let i = rng.below(b.len());
                b.remove(i);
            }
            3 => {
                let i = rng.below(b.len() + 1);
                b.truncate(i);
            }
            4 if !b.is_empty() => {
                let i = rng.below(b.len());
                let j = i + rng.below(b.len() - i);
                let chunk = b[i..j].to_vec();
                b.splice(j..j, chunk);
            }
            _ => {
                // a msgpack marker where it hurts: huge lengths, ext types, nil
                let i = rng.below(b.len() + 1);
                let m = *rng.pick(&[0xc0u8, 0xc1, 0xd9, 0xdb, 0xdd, 0xdf, 0xc7, 0xd4, 0xff]);
                b.insert(i, m);
            }
        }
    }
    b
}

/// A random msgpack value of the shapes a config holds (and some it never should).
fn value(rng: &mut Rng, depth: u32) -> rmpv::Value {
    use rmpv::Value as V;
    match rng.below(if depth > 2 { 5 } else { 8 }) {
        0 => V::Nil,
        1 => V::from(rng.text(6)),
        2 => V::from(rng.below(3) == 0),
        3 => V::from(i64::try_from(rng.next() >> 1).unwrap_or(0) - (1 << 62)),
        4 => V::F64(f64::from_bits(rng.next())),
        5 => V::Array((0..rng.below(4)).map(|_| value(rng, depth + 1)).collect()),
        6 => V::Map(
            (0..rng.below(4))
                .map(|_| (V::from(rng.text(3)), value(rng, depth + 1)))
                .collect(),
        ),
        _ => V::Binary((0..rng.below(8)).map(|_| 0xa5u8).collect()),
    }
}

fn encode(v: &rmpv::Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, v).unwrap();
    out
}

#[test]
fn cty_msgpack_configs_never_panic() {
    let mut rng = Rng::new();
    let mut seeds = vec![
        JobConfig::command("/bin/echo", &["a", "$b"]).msgpack(),
        JobConfig {
            unit: Some("web@x.service".into()),
            properties: Some(vec![("MemoryMax".into(), "1G".into())]),
            work_dir: Some("/local".into()),
            ..JobConfig::default()
        }
        .msgpack(),
        PluginConfig::default().to_msgpack(),
    ];
    seeds.push(Vec::new());
    let task_keys = ["command", "args", "unit", "properties", "work_dir", "bogus"];
    let plugin_keys = [
        "slice",
        "allowed_units",
        "allowed_users",
        "default_user",
        "allow_root",
        "allowed_properties",
        "denied_properties",
        "sandbox",
        "allow_loosening",
    ];
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..iterations() {
        let bytes = match rng.below(4) {
            0 => {
                let seed = rng.pick(&seeds).clone();
                mutate(&mut rng, &seed)
            }
            1 => {
                // every key of the task config, as cty sends them, each of its own shape or not
                use rmpv::Value as V;
                let shaped = |rng: &mut Rng, key: &str| -> V {
                    if rng.below(3) == 0 {
                        return value(rng, 0);
                    }
                    match key {
                        "args" => {
                            V::Array((0..rng.below(4)).map(|_| V::from(rng.text(5))).collect())
                        }
                        "properties" => V::Map(
                            (0..rng.below(3))
                                .map(|_| {
                                    let def = rng.pick(PROPERTIES);
                                    (V::from(def.name), V::from(rng.text(4)))
                                })
                                .collect(),
                        ),
                        _ if rng.below(2) == 0 => V::Nil,
                        _ => V::from(format!("/{}", rng.text(4))),
                    }
                };
                let map = V::Map(
                    ["args", "command", "properties", "unit", "work_dir"]
                        .into_iter()
                        .map(|k| (V::from(k), shaped(&mut rng, k)))
                        .collect(),
                );
                encode(&map)
            }
            2 => {
                let keys: &[&str] = if rng.below(2) == 0 {
                    &task_keys
                } else {
                    &plugin_keys
                };
                let map = rmpv::Value::Map(
                    (0..rng.below(6))
                        .map(|_| (rmpv::Value::from(*rng.pick(keys)), value(&mut rng, 0)))
                        .collect(),
                );
                encode(&map)
            }
            _ => encode(&value(&mut rng, 0)),
        };
        no_panic(
            "TaskUserConfig::from_msgpack",
            &bytes,
            || match TaskUserConfig::from_msgpack(&bytes) {
                Ok(_) => ok += 1,
                Err(e) => {
                    assert!(!e.to_string().is_empty());
                    refused += 1;
                }
            },
        );
        no_panic("PluginConfig::from_msgpack", &bytes, || {
            let _ = PluginConfig::from_msgpack(&bytes);
        });
    }
    eprintln!("cty-msgpack: {ok} decoded, {refused} refused, 0 panics");
}

#[test]
fn property_values_never_panic_and_never_inject() {
    let mut rng = Rng::new();
    let mut accepted = 0;
    for _ in 0..iterations() {
        let def = rng.pick(PROPERTIES);
        let value = match rng.below(3) {
            0 => rng.text(8),
            1 => {
                let mut v = def.example.to_string();
                v.push_str(&rng.text(2));
                v
            }
            _ => format!("{} {}", def.example, rng.text(3)),
        };
        no_panic(def.name, &value, || {
            let Ok(dbus) = to_dbus(def.name, &value) else {
                return;
            };
            accepted += 1;
            assert!(!dbus.is_empty(), "{} = {value:?}: no D-Bus value", def.name);
            // what the drop-in gets is one line of this one setting, whatever the value held
            let line = dropin_line(def.name, &value)
                .unwrap_or_else(|e| panic!("{} = {value:?}: D-Bus ok, drop-in {e}", def.name));
            assert!(
                !line.contains(['\n', '\r', '\0']),
                "{} = {value:?}: {line:?}",
                def.name
            );
            assert!(line.starts_with(&format!("{}=", def.name)), "{line:?}");
        });
    }
    eprintln!("properties: {accepted} accepted values, 0 panics, 0 injections");
}

#[test]
fn unit_names_round_trip_for_any_input() {
    let mut rng = Rng::new();
    for _ in 0..iterations() {
        let s = rng.text(10).replace('\0', "");
        no_panic("escape/unescape", &s, || {
            assert_eq!(unescape(&escape(&s)).as_deref(), Some(s.as_str()));
            let _ = parse_unit_name(&s);
            let _ = valid_unit_name(&s);
        });
        let task = if s.is_empty() {
            "t".to_string()
        } else {
            s.clone()
        };
        let alloc = "8f3c2d1e-1111-2222-3333-444455556666";
        no_panic("unit_name", &task, || {
            let n = unit_name(alloc, &task, "0a1b2c3d");
            assert!(valid_unit_name(&n), "{n}");
            assert!(n.len() <= 255, "{n}");
            let id = format!("{alloc}/{task}/0a1b2c3d");
            assert_eq!(unit_of_task_id(&id), Some(n.clone()), "{id}");
            let p = parse_unit_name(&n).unwrap_or_else(|| panic!("{n} does not parse"));
            assert_eq!(p.alloc_id, alloc);
            assert_eq!(p.id_suffix, "0a1b2c3d");
        });
        no_panic("unit_of_task_id", &s, || {
            if let Some(n) = unit_of_task_id(&s) {
                assert!(valid_unit_name(&n), "{s:?} → {n}");
            }
        });
    }
}

/// The shell form of an argv gives the argv back, byte for byte, through a real `/bin/sh`.
#[test]
fn the_shell_form_of_any_argv_is_the_argv() {
    let mut rng = Rng::new();
    let runs = (iterations() / 10).max(50);
    for _ in 0..runs {
        let mut args: Vec<String> = (0..rng.below(6))
            .map(|_| rng.text(6).replace('\0', ""))
            .collect();
        args.push("$;".into()); // always through the shell
        let mut argv = vec!["/usr/bin/printf".to_string(), "%s\\0".to_string()];
        argv.extend(args.iter().cloned());
        let (path, sd_argv) = exec_argv(&argv);
        assert_eq!(path, "/bin/sh");
        assert!(
            !sd_argv.iter().any(|a| a.contains(['$', ';'])),
            "{sd_argv:?}"
        );
        let out = std::process::Command::new(&path)
            .args(&sd_argv[1..])
            .output()
            .unwrap();
        assert!(out.status.success(), "{sd_argv:?}: {out:?}");
        let want: Vec<u8> = args
            .iter()
            .flat_map(|a| a.bytes().chain(std::iter::once(0)))
            .collect();
        assert_eq!(out.stdout, want, "argv {args:?} as {sd_argv:?}");
    }
}

/// Any text as a plugin duration: no panic, and what parses reads back from its spelling.
#[test]
fn durations_never_panic_and_read_back() {
    let mut rng = Rng::new();
    for _ in 0..iterations() {
        let text = rng.text(6);
        check_duration(&text);
    }
}

fn check_duration(text: &str) {
    no_panic("duration::parse", &text, || {
        if let Some(d) = duration::parse(text) {
            assert_eq!(duration::parse(&duration::format(d)), Some(d), "{text:?}");
        }
    });
}

fn check_cty(bytes: &[u8]) {
    no_panic("TaskUserConfig::from_msgpack", &bytes, || {
        if let Err(e) = TaskUserConfig::from_msgpack(bytes) {
            assert!(!e.to_string().is_empty());
        }
    });
    no_panic("PluginConfig::from_msgpack", &bytes, || {
        if let Err(e) = PluginConfig::from_msgpack(bytes) {
            assert!(!e.to_string().is_empty());
        }
    });
}

fn check_property(name: &str, value: &str) {
    no_panic(name, &value, || {
        let Ok(dbus) = to_dbus(name, value) else {
            return;
        };
        assert!(!dbus.is_empty(), "{name} = {value:?}: no D-Bus value");
        let line = dropin_line(name, value)
            .unwrap_or_else(|e| panic!("{name} = {value:?}: D-Bus ok, drop-in {e}"));
        assert!(!line.contains(['\n', '\r', '\0']), "{line:?}");
    });
}

fn check_unit_name(s: &str) {
    no_panic("unit names", &s, || {
        let s = s.replace('\0', "");
        assert_eq!(unescape(&escape(&s)).as_deref(), Some(s.as_str()));
        let _ = parse_unit_name(&s);
        let _ = valid_unit_name(&s);
        if let Some(n) = unit_of_task_id(&s) {
            assert!(valid_unit_name(&n), "{s:?} → {n}");
        }
    });
}

fn check_job(name: &str, text: &str) {
    use nomad_driver_systemd::cli::{job, validate};
    no_panic("job parse and validate", &name, || {
        if let Ok(j) = job::parse(text) {
            let _ = validate::check_job(
                name,
                &j,
                &PluginConfig::default(),
                nomad_driver_systemd::unit::Host::default(),
            );
        }
    });
}

/// Every file of `tests/fuzz-corpus/<parser>/`, sorted.
fn corpus(parser: &str) -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-corpus")
        .join(parser);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    files
}

#[test]
fn the_kept_corpus_replays() {
    // What the plugin decodes, on a thread with a tokio worker's stack (2 MiB): deep nesting
    // must be refused, not overflow it.
    let plugin_inputs = || {
        let mut n = 0;
        for (_, bytes) in corpus("cty-msgpack") {
            check_cty(&bytes);
            n += 1;
        }
        for (name, bytes) in corpus("property") {
            let text = String::from_utf8(bytes).unwrap_or_else(|_| panic!("{name}: not UTF-8"));
            let (prop, value) = text
                .split_once('=')
                .unwrap_or_else(|| panic!("{name}: not Name=value"));
            check_property(prop, value);
            n += 1;
        }
        for (_, bytes) in corpus("duration") {
            check_duration(&String::from_utf8_lossy(&bytes));
            n += 1;
        }
        for (_, bytes) in corpus("unit-name") {
            check_unit_name(&String::from_utf8_lossy(&bytes));
            n += 1;
        }
        n
    };
    // Job files are read by the CLI (`validate`, `run`) on its main thread (8 MiB).
    let job_files = || {
        let mut n = 0;
        for (name, bytes) in corpus("job") {
            check_job(&name, &String::from_utf8_lossy(&bytes));
            n += 1;
        }
        n
    };
    let on_stack = |mib: usize, f: fn() -> usize| {
        std::thread::Builder::new()
            .stack_size(mib << 20)
            .spawn(f)
            .unwrap()
            .join()
            .expect("the corpus replay panicked")
    };
    let n = on_stack(2, plugin_inputs) + on_stack(8, job_files);
    eprintln!("corpus: {n} inputs replayed, 0 panics");
}
