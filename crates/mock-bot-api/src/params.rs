//! Method parameters, gathered the way real clients send them.
//!
//! The Bot API accepts parameters in the query string, as `application/x-www-form-urlencoded`
//! or `multipart/form-data` bodies, and as a JSON object body. All of them are merged into
//! one map (the body wins over the query). Form and query values are strings, so the typed
//! getters also accept numbers written as strings and arrays written as JSON text.

use axum::Form;
use axum::body::to_bytes;
use axum::extract::{FromRequest, Multipart, Query, Request};
use axum::http::header::CONTENT_TYPE;
use serde_json::{Map, Value};

/// Largest request body read, in bytes.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// The merged parameters of one call.
#[derive(Debug, Default)]
pub(crate) struct Params(Map<String, Value>);

impl Params {
    /// Reads query and body of `req`. An error is the text after `Bad Request: `.
    pub(crate) async fn extract(req: Request) -> Result<Self, String> {
        let mut map = Map::new();
        if req.uri().query().is_some() {
            let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(req.uri())
                .map_err(|e| format!("can't parse query string: {e}"))?;
            insert_strings(&mut map, pairs);
        }
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if content_type.starts_with("multipart/form-data") {
            let mut multipart = Multipart::from_request(req, &())
                .await
                .map_err(|e| format!("can't parse multipart body: {e}"))?;
            while let Some(field) = multipart
                .next_field()
                .await
                .map_err(|e| format!("can't parse multipart body: {e}"))?
            {
                let Some(name) = field.name().map(str::to_owned) else {
                    continue;
                };
                if field.file_name().is_some() {
                    // Uploaded files are not needed by any implemented method.
                    map.insert(name, Value::String("<file>".to_owned()));
                    continue;
                }
                let text = field
                    .text()
                    .await
                    .map_err(|e| format!("can't read multipart field: {e}"))?;
                map.insert(name, Value::String(text));
            }
        } else if content_type.starts_with("application/x-www-form-urlencoded") {
            let Form(pairs) = Form::<Vec<(String, String)>>::from_request(req, &())
                .await
                .map_err(|e| format!("can't parse form body: {e}"))?;
            insert_strings(&mut map, pairs);
        } else {
            let body = to_bytes(req.into_body(), MAX_BODY)
                .await
                .map_err(|e| format!("can't read body: {e}"))?;
            if !body.iter().all(u8::is_ascii_whitespace) {
                match serde_json::from_slice::<Value>(&body) {
                    Ok(Value::Object(obj)) => map.extend(obj),
                    Ok(_) => return Err("JSON body must be an object".to_owned()),
                    Err(e) => return Err(format!("can't parse JSON body: {e}")),
                }
            }
        }
        Ok(Self(map))
    }

    /// All parameters as one JSON object.
    pub(crate) fn into_value(self) -> Value {
        Value::Object(self.0)
    }

    /// The raw value of `name`, unless absent or null.
    pub(crate) fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    /// An integer parameter, given as a JSON number or a decimal string.
    pub(crate) fn int(&self, name: &str) -> Result<Option<i64>, String> {
        let bad = || format!("invalid {name}: expected an integer");
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => Ok(Some(i)),
                (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e18 => Ok(Some(f as i64)),
                _ => Err(bad()),
            },
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| bad()),
            Some(_) => Err(bad()),
        }
    }

    /// A boolean parameter: JSON bool, or `true`/`false`/`1`/`0` as text.
    pub(crate) fn bool(&self, name: &str) -> Result<Option<bool>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) => match s.trim() {
                "true" | "True" | "1" => Ok(Some(true)),
                "false" | "False" | "0" | "" => Ok(Some(false)),
                _ => Err(format!("invalid {name}: expected a boolean")),
            },
            Some(Value::Number(n)) => Ok(Some(n.as_f64() != Some(0.0))),
            Some(_) => Err(format!("invalid {name}: expected a boolean")),
        }
    }

    /// A text parameter; numbers are accepted and written out.
    pub(crate) fn string(&self, name: &str) -> Result<Option<String>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(format!("invalid {name}: expected a string")),
        }
    }

    /// An array of strings, given as a JSON array or as JSON text of one.
    pub(crate) fn string_array(&self, name: &str) -> Result<Option<Vec<String>>, String> {
        let bad = || format!("can't parse {name} JSON array");
        let array = match self.get(name) {
            None => return Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => return Ok(Some(Vec::new())),
            Some(Value::String(s)) => serde_json::from_str::<Value>(s).map_err(|_| bad())?,
            Some(v) => v.clone(),
        };
        match array {
            Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(bad()),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            _ => Err(bad()),
        }
    }
}

fn insert_strings(map: &mut Map<String, Value>, pairs: Vec<(String, String)>) {
    for (k, v) in pairs {
        map.insert(k, Value::String(v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(v: Value) -> Params {
        match v {
            Value::Object(m) => Params(m),
            _ => unreachable!("test input is an object"),
        }
    }

    #[test]
    fn integers_from_numbers_and_strings() {
        let p = params(json!({"a": 5, "b": "-7", "c": "x", "d": 2.0, "e": true, "f": null}));
        assert_eq!(p.int("a"), Ok(Some(5)));
        assert_eq!(p.int("b"), Ok(Some(-7)));
        assert!(p.int("c").is_err());
        assert_eq!(p.int("d"), Ok(Some(2)));
        assert!(p.int("e").is_err());
        assert_eq!(p.int("f"), Ok(None));
        assert_eq!(p.int("missing"), Ok(None));
    }

    #[test]
    fn arrays_from_arrays_and_json_text() {
        let p = params(json!({"a": ["message"], "b": "[\"message\",\"poll\"]", "c": "nope", "d": [1]}));
        assert_eq!(p.string_array("a"), Ok(Some(vec!["message".to_owned()])));
        assert_eq!(
            p.string_array("b"),
            Ok(Some(vec!["message".to_owned(), "poll".to_owned()]))
        );
        assert!(p.string_array("c").is_err());
        assert!(p.string_array("d").is_err());
    }
}
