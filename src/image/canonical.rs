//! Canonical JSON: object keys sorted by their bytes, no insignificant
//! whitespace. Configs, manifests and indexes are written this way so that
//! the same content always has the same digest, whatever order a struct or
//! a `HashMap` (oci-spec's annotations) holds its fields in.

use serde::Serialize;
use serde_json::Value;

/// Serializes `value` as canonical JSON.
pub fn to_vec<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let v = serde_json::to_value(value)?;
    let mut out = Vec::new();
    write(&v, &mut out)?;
    Ok(out)
}

fn write(v: &Value, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, k)?;
                out.push(b':');
                if let Some(child) = map.get(k) {
                    write(child, out)?;
                }
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out)?;
            }
            out.push(b']');
        }
        scalar => serde_json::to_writer(&mut *out, scalar)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn sorts_keys_at_every_level() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{"b":1,"a":{"z":[{"y":1,"x":2}],"c":"\u00e9\n"}}"#)
                .expect("json");
        let out = String::from_utf8(super::to_vec(&v).expect("ser")).expect("utf8");
        assert_eq!(
            out,
            "{\"a\":{\"c\":\"é\\n\",\"z\":[{\"x\":2,\"y\":1}]},\"b\":1}"
        );
    }
}
