//! The bounds on the JSON schemas of one request (`response_format` and every tool's
//! `parameters` together), checked before anything compiles them.
//!
//! The grammar compiler (llguidance) recurses once per property of an object and builds an
//! Earley parser whose rows grow with an object's optional properties: an object of ~4,500
//! properties overflows a 2 MiB thread stack (aborting the process), and one of ~1,000
//! optional properties makes every mask fail as "too complex". These limits keep every
//! schema under them compilable on a default stack and runnable at decode time, and name
//! the field that is over. They follow OpenAI's published limits for structured outputs
//! where it has them (5,000 properties, 1,000 enum values, 128 tools). The walk is
//! iterative, so the check itself cannot recurse however deep the schema is.

use std::collections::HashSet;

use serde_json::Value;

use super::error::ApiError;

/// Tools in one request.
pub const MAX_TOOLS: usize = 128;
/// Object properties in all schemas of a request together.
pub const MAX_PROPERTIES: usize = 5_000;
/// Properties of one object.
pub const MAX_OBJECT_PROPERTIES: usize = 1_000;
/// Optional properties (not in `required`) of one object, or of the objects among one
/// `anyOf` / `oneOf`'s branches together (the parser follows all of them at once).
pub const MAX_OPTIONAL_PROPERTIES: usize = 256;
/// `enum` values in all schemas of a request together.
pub const MAX_ENUM_VALUES: usize = 1_000;
/// Nesting of JSON values inside one schema.
pub const MAX_DEPTH: usize = 64;
/// The schemas' JSON text, all together.
pub const MAX_SCHEMA_BYTES: usize = 512 * 1024;

/// What the schemas checked so far have used of the request's budget.
#[derive(Default)]
pub struct SchemaBudget {
    properties: usize,
    enum_values: usize,
    bytes: usize,
}

impl SchemaBudget {
    /// Checks `schema` (found at the request field `param`) and charges it to the budget.
    pub fn check(&mut self, param: &str, schema: &Value) -> Result<(), ApiError> {
        let over = |what: String| {
            ApiError::invalid(
                param,
                format!("`{param}` is over this server's schema limits: {what}"),
            )
        };
        let mut stack = vec![(schema, 1usize)];
        while let Some((v, depth)) = stack.pop() {
            if depth > MAX_DEPTH {
                return Err(over(format!("it nests deeper than {MAX_DEPTH} levels")));
            }
            match v {
                Value::Object(obj) => {
                    if let Some(Value::Object(props)) = obj.get("properties") {
                        self.properties(props, obj.get("required")).map_err(over)?;
                    }
                    for key in ["anyOf", "oneOf"] {
                        if let Some(Value::Array(branches)) = obj.get(key) {
                            let optional: usize = branches
                                .iter()
                                .map(|b| optional_properties(resolve(schema, b)))
                                .sum();
                            if optional > MAX_OPTIONAL_PROPERTIES {
                                return Err(over(format!(
                                    "the branches of an `{key}` have {optional} optional properties together; at most {MAX_OPTIONAL_PROPERTIES} are allowed"
                                )));
                            }
                        }
                    }
                    if let Some(Value::Array(values)) = obj.get("enum") {
                        self.enum_values += values.len();
                        if self.enum_values > MAX_ENUM_VALUES {
                            return Err(over(format!(
                                "more than {MAX_ENUM_VALUES} enum values in all schemas together"
                            )));
                        }
                    }
                    stack.extend(obj.values().map(|c| (c, depth + 1)));
                }
                Value::Array(items) => stack.extend(items.iter().map(|c| (c, depth + 1))),
                _ => {}
            }
        }
        // The text is measured once the nesting is known to be bounded.
        self.bytes += schema.to_string().len();
        if self.bytes > MAX_SCHEMA_BYTES {
            return Err(over(format!(
                "more than {} KiB of schema text in all schemas together",
                MAX_SCHEMA_BYTES / 1024
            )));
        }
        Ok(())
    }

    /// Counts one object's `properties`, given its `required`.
    fn properties(
        &mut self,
        props: &serde_json::Map<String, Value>,
        required: Option<&Value>,
    ) -> Result<(), String> {
        if props.len() > MAX_OBJECT_PROPERTIES {
            return Err(format!(
                "an object has {} properties; at most {MAX_OBJECT_PROPERTIES} are allowed",
                props.len()
            ));
        }
        let listed = required_names(required);
        if listed.len() > MAX_OBJECT_PROPERTIES {
            return Err(format!(
                "an object requires {} properties; at most {MAX_OBJECT_PROPERTIES} are allowed",
                listed.len()
            ));
        }
        let optional = not_listed(props, &listed);
        if optional > MAX_OPTIONAL_PROPERTIES {
            return Err(format!(
                "an object has {optional} optional properties (not in `required`); at most {MAX_OPTIONAL_PROPERTIES} are allowed"
            ));
        }
        self.properties += props.len();
        if self.properties > MAX_PROPERTIES {
            return Err(format!(
                "more than {MAX_PROPERTIES} object properties in all schemas together"
            ));
        }
        Ok(())
    }
}

/// The names an object's `required` lists.
fn required_names(required: Option<&Value>) -> HashSet<&str> {
    required
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// How many of `schema`'s properties are optional, if it is an object that lists them.
fn optional_properties(schema: &Value) -> usize {
    let Some(Value::Object(props)) = schema.get("properties") else {
        return 0;
    };
    not_listed(props, &required_names(schema.get("required")))
}

/// How many of `props` are not in `listed`.
fn not_listed(props: &serde_json::Map<String, Value>, listed: &HashSet<&str>) -> usize {
    props
        .keys()
        .filter(|k| !listed.contains(k.as_str()))
        .count()
}

/// `schema` itself, or what its local `$ref` (`#/$defs/X`) points at within `root`.
fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) if r.starts_with('#') => root.pointer(&r[1..]).unwrap_or(schema),
        _ => schema,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(n: usize, required: bool) -> Value {
        let props: serde_json::Map<String, Value> = (0..n)
            .map(|i| (format!("p{i}"), json!({"type": "string"})))
            .collect();
        let names: Vec<&String> = props.keys().collect();
        let required = if required { json!(names) } else { json!([]) };
        json!({"type": "object", "properties": props, "required": required})
    }

    #[test]
    fn counts_properties_per_object_and_per_request() {
        let mut b = SchemaBudget::default();
        assert!(b.check("a", &object(1000, true)).is_ok());
        let e = SchemaBudget::default()
            .check("tools[0].function.parameters", &object(1001, true))
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tools[0].function.parameters"));
        assert!(e.message.contains("1001 properties"), "{}", e.message);
        for _ in 0..4 {
            b.check("b", &object(1000, true)).unwrap();
        }
        assert!(b.check("c", &object(1, true)).is_err());
    }

    #[test]
    fn bounds_optional_properties_depth_and_enums() {
        let mut b = SchemaBudget::default();
        assert!(b.check("a", &object(256, false)).is_ok());
        assert!(b.check("a", &object(257, false)).is_err());
        let mut deep = json!({"type": "string"});
        for _ in 0..MAX_DEPTH {
            deep = json!({"type": "array", "items": deep});
        }
        let e = SchemaBudget::default().check("d", &deep).unwrap_err();
        assert!(e.message.contains("deeper"), "{}", e.message);
        let wide = |n| object(n, false);
        let union = json!({"$defs": {"B": wide(128)}, "anyOf": [wide(128), {"$ref": "#/$defs/B"}]});
        assert!(SchemaBudget::default().check("u", &union).is_ok());
        let union = json!({"$defs": {"B": wide(129)}, "anyOf": [wide(128), {"$ref": "#/$defs/B"}]});
        let e = SchemaBudget::default().check("u", &union).unwrap_err();
        assert!(e.message.contains("`anyOf`"), "{}", e.message);
        let e = SchemaBudget::default()
            .check("e", &json!({"enum": (0..1001).collect::<Vec<_>>()}))
            .unwrap_err();
        assert!(e.message.contains("enum"), "{}", e.message);
    }
}
