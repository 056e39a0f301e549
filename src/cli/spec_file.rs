//! `-f FILE` of `agents create` and `agents update`: a JSON or YAML object read from a
//! file, or from standard input for `-`. `.json` is JSON, `.yaml`/`.yml` YAML, anything
//! else JSON first, then YAML.

use std::io::Read;
use std::path::Path;

use serde_json::{Map, Value};

use super::CliError;

/// The largest file read: well above any body the manager takes (`MAX_BODY_BYTES`).
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Which syntax a file is read with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Syntax {
    Json,
    Yaml,
    /// No telling extension: JSON, else YAML.
    Either,
}

fn syntax_of(path: &Path) -> Syntax {
    match path.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("json") => Syntax::Json,
        Some(e) if e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml") => Syntax::Yaml,
        _ => Syntax::Either,
    }
}

/// Reads the object in `path` (`-`: standard input).
pub fn read(path: &Path) -> Result<Map<String, Value>, CliError> {
    let name = path.display().to_string();
    let mut text = String::new();
    let read = if name == "-" {
        std::io::stdin()
            .take(MAX_FILE_BYTES)
            .read_to_string(&mut text)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(MAX_FILE_BYTES).read_to_string(&mut text))
    };
    read.map_err(|e| CliError::Usage(format!("cannot read {name}: {e}")))?;
    parse(&text, syntax_of(path)).map_err(|e| CliError::Usage(format!("{name}: {e}")))
}

/// Why a spec file's text is not the object an order is made of.
#[derive(Debug, thiserror::Error)]
enum SpecFileError {
    #[error("not JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("not YAML: {0}")]
    Yaml(#[source] serde_norway::Error),
    /// JSON or YAML, but not an object (the value as it reads).
    #[error("an object (name: value pairs) is needed, not {0}")]
    NotAnObject(Value),
}

/// The object in `text`.
fn parse(text: &str, syntax: Syntax) -> Result<Map<String, Value>, SpecFileError> {
    let json = || serde_json::from_str::<Value>(text).map_err(SpecFileError::Json);
    let yaml = || serde_norway::from_str::<Value>(text).map_err(SpecFileError::Yaml);
    let value = match syntax {
        Syntax::Json => json()?,
        Syntax::Yaml => yaml()?,
        Syntax::Either => json().or_else(|_| yaml())?,
    };
    match value {
        Value::Object(map) => Ok(map),
        other => Err(SpecFileError::NotAnObject(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_and_yaml_give_the_same_object() {
        let yaml = "customer_id: acme\nagent_type: trading\nresources:\n  memory_mb: 64\n  cpus: 0.5\nconfig: {symbol: BTC-USD}\n";
        let from_yaml = parse(yaml, Syntax::Yaml).unwrap();
        let from_json = parse(
            r#"{"customer_id":"acme","agent_type":"trading","resources":{"memory_mb":64,"cpus":0.5},"config":{"symbol":"BTC-USD"}}"#,
            Syntax::Json,
        )
        .unwrap();
        assert_eq!(from_yaml, from_json);
        assert_eq!(parse(yaml, Syntax::Either).unwrap(), from_json);
        assert_eq!(from_yaml["resources"]["memory_mb"], json!(64));
    }

    #[test]
    fn only_objects_are_taken() {
        assert_eq!(
            parse("[1, 2]", Syntax::Json).unwrap_err().to_string(),
            "an object (name: value pairs) is needed, not [1,2]"
        );
        assert!(parse("- a\n- b\n", Syntax::Yaml).is_err());
        assert!(parse("{not json", Syntax::Json)
            .unwrap_err()
            .to_string()
            .starts_with("not JSON"));
    }

    #[test]
    fn the_extension_picks_the_syntax() {
        assert_eq!(syntax_of(Path::new("a.JSON")), Syntax::Json);
        assert_eq!(syntax_of(Path::new("a.yml")), Syntax::Yaml);
        assert_eq!(syntax_of(Path::new("-")), Syntax::Either);
    }
}
