//! Decoding of Nomad's cty-msgpack configs (docs/nomad-contract.md, *Schemas and config encoding*): every schema key present, nil for absent,
//! numbers as int, float64 or decimal string.

use std::collections::BTreeMap;

use rmpv::Value;
use serde::de::DeserializeOwned;

use super::ConfigError;

/// Decodes a single cty-msgpack value into `T`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    rmp_serde::from_slice(bytes).map_err(|e| ConfigError::Decode(e.to_string().to_lowercase()))
}

/// Nesting allowed in a config's msgpack. Our schemas nest four levels at most (an object, a
/// list of objects, their maps); rmpv's own limit (1024) lets a crafted config recurse deep
/// enough to overflow a 2 MiB worker stack in the decoder and in `Value`'s drop.
const MAX_DEPTH: usize = 32;

/// A decoded config object read key by key, so every error names its key. Nil counts as absent.
#[derive(Debug)]
pub struct Fields {
    map: BTreeMap<String, Value>,
    prefix: &'static str,
}

impl Fields {
    /// Decodes a cty-msgpack object (the root of every schema is an Object).
    pub fn from_msgpack(bytes: &[u8], prefix: &'static str) -> Result<Self, ConfigError> {
        let value = rmpv::decode::read_value_with_max_depth(&mut &bytes[..], MAX_DEPTH)
            .map_err(|e| ConfigError::Decode(e.to_string().to_lowercase()))?;
        Self::from_value(value, prefix)
    }

    /// Wraps an already decoded map value.
    pub fn from_value(value: Value, prefix: &'static str) -> Result<Self, ConfigError> {
        let Value::Map(entries) = value else {
            return Err(ConfigError::Decode(format!(
                "expected an object at the top level, found {}",
                kind(&value)
            )));
        };
        let mut map = BTreeMap::new();
        for (k, v) in entries {
            let Value::String(k) = k else {
                return Err(ConfigError::Decode("object key is not a string".into()));
            };
            let k = k
                .into_str()
                .ok_or_else(|| ConfigError::Decode("object key is not utf-8".into()))?;
            if !v.is_nil() {
                map.insert(k, v);
            }
        }
        Ok(Self { map, prefix })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn wrong(&self, key: &str, want: &str, got: &Value) -> ConfigError {
        ConfigError::invalid(
            self.key(key),
            format!("expected {want}, found {}", kind(got)),
        )
    }

    pub fn bool(&mut self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.map.remove(key) {
            None => Ok(None),
            Some(Value::Boolean(b)) => Ok(Some(b)),
            Some(v) => Err(self.wrong(key, "a bool", &v)),
        }
    }

    pub fn string(&mut self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.map.remove(key) {
            None => Ok(None),
            Some(v) => self.as_string(key, v).map(Some),
        }
    }

    fn as_string(&self, key: &str, v: Value) -> Result<String, ConfigError> {
        match v {
            Value::String(s) => s
                .into_str()
                .ok_or_else(|| ConfigError::invalid(self.key(key), "string is not utf-8")),
            v => Err(self.wrong(key, "a string", &v)),
        }
    }

    pub fn string_list(&mut self, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        match self.map.remove(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| self.as_string(&format!("{key}[{i}]"), v))
                .collect::<Result<_, _>>()
                .map(Some),
            Some(v) => Err(self.wrong(key, "a list of strings", &v)),
        }
    }

    /// A `map(string)`; a one-element list holding the map (HCL's wrapping) is unwrapped too.
    pub fn string_map(
        &mut self,
        key: &str,
    ) -> Result<Option<BTreeMap<String, String>>, ConfigError> {
        let entries = match self.map.remove(key) {
            None => return Ok(None),
            Some(Value::Map(entries)) => entries,
            Some(Value::Array(mut items)) if items.len() == 1 && items[0].is_map() => {
                match items.pop() {
                    Some(Value::Map(entries)) => entries,
                    _ => unreachable!("checked to be a map"),
                }
            }
            Some(v) => return Err(self.wrong(key, "a map of strings", &v)),
        };
        let mut out = BTreeMap::new();
        for (k, v) in entries {
            let k = self.as_string(key, k)?;
            let v = self.as_string(&format!("{key}.{k}"), v)?;
            out.insert(k, v);
        }
        Ok(Some(out))
    }

    /// Refuses keys no reader asked for.
    pub fn finish(self) -> Result<(), ConfigError> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(k) => Err(ConfigError::invalid(self.key(k), "unknown key")),
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Nil => "null",
        Value::Boolean(_) => "a bool",
        Value::Integer(_) | Value::F32(_) | Value::F64(_) => "a number",
        Value::String(_) => "a string",
        Value::Binary(_) => "binary data",
        Value::Array(_) => "a list",
        Value::Map(_) => "a map",
        Value::Ext(..) => "an unknown value",
    }
}

/// Converts a TOML value into the same shape, so TOML files are judged by the same readers.
pub fn from_toml(value: toml::Value) -> Value {
    match value {
        toml::Value::String(s) => Value::from(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => Value::from(f),
        toml::Value::Boolean(b) => Value::from(b),
        toml::Value::Datetime(d) => Value::from(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.into_iter().map(from_toml).collect()),
        toml::Value::Table(t) => Value::Map(
            t.into_iter()
                .map(|(k, v)| (Value::from(k), from_toml(v)))
                .collect(),
        ),
    }
}

/// A cty number as it travels: an integer, a float64, or a decimal string.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(untagged)]
pub enum CtyNumber {
    Int(i64),
    Float(f64),
    Text(String),
}

impl CtyNumber {
    /// The value as an `i64`, if it is a whole number in range.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            CtyNumber::Int(i) => Some(*i),
            #[allow(clippy::cast_possible_truncation)]
            CtyNumber::Float(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Some(*f as i64),
            CtyNumber::Float(_) => None,
            CtyNumber::Text(s) => s.parse().ok(),
        }
    }

    /// The value as an `f64` (decimal strings parsed; precision beyond f64 is lost).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            #[allow(clippy::cast_precision_loss)]
            CtyNumber::Int(i) => Some(*i as f64),
            CtyNumber::Float(f) => Some(*f),
            CtyNumber::Text(s) => s.parse().ok(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn nesting_beyond_the_limit_is_refused() {
        // {"a": [[…[]…]]}: 8 levels decode, 100 are refused before any recursion that deep
        let nested = |depth: usize| {
            let mut b = vec![0x81, 0xa1, b'a'];
            b.extend(std::iter::repeat_n(0x91, depth - 1));
            b.push(0x90);
            b
        };
        assert!(Fields::from_msgpack(&nested(8), "").is_ok());
        assert!(Fields::from_msgpack(&nested(100), "").is_err());
    }

    pub fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn numbers_decode_in_every_wire_form() {
        let cases: &[(&str, Option<i64>, f64)] = &[
            ("1e", Some(30), 30.0),
            ("ccc8", Some(200), 200.0),
            ("ce00011170", Some(70000), 70000.0),
            ("ff", Some(-1), -1.0),
            ("cb3fe0000000000000", None, 0.5),
            ("a3302e31", None, 0.1),
        ];
        for (bytes, int, float) in cases {
            let n: CtyNumber = decode(&hex(bytes)).unwrap();
            assert_eq!(n.as_i64(), *int, "{bytes}");
            assert_eq!(n.as_f64(), Some(*float), "{bytes}");
        }
    }

    #[test]
    fn big_integers_arrive_as_text() {
        let mut bytes = vec![0xb3];
        bytes.extend_from_slice(b"9223372036854775808");
        let n: CtyNumber = decode(&bytes).unwrap();
        assert_eq!(n, CtyNumber::Text("9223372036854775808".into()));
        assert_eq!(n.as_i64(), None);
    }
}
