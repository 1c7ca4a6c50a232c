//! Our own D-Bus value type for `StartTransientUnit` properties, so that the property catalog and
//! the planner never name zbus.

/// A D-Bus value as systemd's StartTransientUnit wants it, without naming zbus.
#[derive(Debug, Clone, PartialEq)]
pub enum DValue {
    /// `b`
    Bool(bool),
    /// `i`
    I32(i32),
    /// `u`
    U32(u32),
    /// `x`
    I64(i64),
    /// `t`
    U64(u64),
    /// `s`
    Str(String),
    /// `as`
    StrList(Vec<String>),
    /// `ay`
    Bytes(Vec<u8>),
    /// struct: `(` + the fields' signatures + `)`
    Struct(Vec<DValue>),
    /// array of a given element signature (e.g. `(ssbt)`); `sig` is the element's signature,
    /// so that an empty array still has a type.
    Array { sig: String, items: Vec<DValue> },
}

impl DValue {
    /// The D-Bus signature of this value: `"b"`, `"i"`, `"u"`, `"x"`, `"t"`, `"s"`, `"as"`,
    /// `"ay"`, `"(..)"`, `"a(..)"`.
    pub fn signature(&self) -> String {
        match self {
            DValue::Bool(_) => "b".into(),
            DValue::I32(_) => "i".into(),
            DValue::U32(_) => "u".into(),
            DValue::I64(_) => "x".into(),
            DValue::U64(_) => "t".into(),
            DValue::Str(_) => "s".into(),
            DValue::StrList(_) => "as".into(),
            DValue::Bytes(_) => "ay".into(),
            DValue::Struct(fields) => {
                let mut s = String::from("(");
                for f in fields {
                    s.push_str(&f.signature());
                }
                s.push(')');
                s
            }
            DValue::Array { sig, .. } => format!("a{sig}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DValue;

    #[test]
    fn signatures() {
        assert_eq!(DValue::Bool(true).signature(), "b");
        assert_eq!(DValue::I32(-1).signature(), "i");
        assert_eq!(DValue::U32(1).signature(), "u");
        assert_eq!(DValue::I64(1).signature(), "x");
        assert_eq!(DValue::U64(1).signature(), "t");
        assert_eq!(DValue::Str("x".into()).signature(), "s");
        assert_eq!(DValue::StrList(vec![]).signature(), "as");
        assert_eq!(DValue::Bytes(vec![1]).signature(), "ay");
        let bas = DValue::Struct(vec![DValue::Bool(false), DValue::StrList(vec![])]);
        assert_eq!(bas.signature(), "(bas)");
        let arr = DValue::Array {
            sig: "(ss)".into(),
            items: vec![DValue::Struct(vec![
                DValue::Str("a".into()),
                DValue::Str("b".into()),
            ])],
        };
        assert_eq!(arr.signature(), "a(ss)");
        let empty = DValue::Array {
            sig: "(ssbt)".into(),
            items: vec![],
        };
        assert_eq!(empty.signature(), "a(ssbt)");
    }
}
