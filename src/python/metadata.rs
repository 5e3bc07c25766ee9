//! Layer metadata from Python: a dict converted value by value, so what
//! would not read back exactly is refused here with the key path that
//! holds it, instead of being altered silently by `json.dumps` (an int key
//! becomes a str, a tuple a list, `2**60` a number that JSON readers other
//! than Python's round to a float, NaN is not JSON at all).

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString};
use serde_json::{Map, Number, Value};

use crate::graph::Metadata;

/// The largest integer every JSON reader reads back exactly (an IEEE double
/// holds every integer up to 2^53).
const INT_MAX: i64 = 1 << 53;
/// Nesting deeper than this would not read back (the store's JSON reader
/// stops at 128 levels).
const DEPTH_MAX: usize = 100;

pub(crate) fn metadata_from_py(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Metadata> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(Metadata::new());
    };
    let Ok(d) = obj.cast::<PyDict>() else {
        return Err(PyTypeError::new_err(format!(
            "metadata is a dict, not {}",
            type_name(obj)
        )));
    };
    object(d, "metadata", 0)
}

/// A dict as a JSON object, refused as metadata is where it would not read
/// back exactly; `what` names it in errors.
pub(crate) fn json_object_from_py(
    d: &Bound<'_, PyDict>,
    what: &str,
) -> PyResult<Map<String, Value>> {
    object(d, what, 0)
}

fn object(d: &Bound<'_, PyDict>, at: &str, depth: usize) -> PyResult<Map<String, Value>> {
    let mut m = Map::new();
    for (k, v) in d.iter() {
        let Ok(key) = k.cast::<PyString>() else {
            return Err(PyTypeError::new_err(format!(
                "{at}: key {} is {}, not a str (JSON keys are strings; it would read back as a str)",
                k.repr()?,
                type_name(&k)
            )));
        };
        let key = key.to_cow()?.into_owned();
        let here = format!("{at}[{key:?}]");
        let value = value(&v, &here, depth + 1)?;
        m.insert(key, value);
    }
    Ok(m)
}

fn value(v: &Bound<'_, PyAny>, at: &str, depth: usize) -> PyResult<Value> {
    if depth > DEPTH_MAX {
        return Err(PyValueError::new_err(format!(
            "{at}: nested deeper than {DEPTH_MAX} levels"
        )));
    }
    if v.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = v.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if v.is_instance_of::<PyInt>() {
        return match v.extract::<i64>() {
            Ok(i) if (-INT_MAX..=INT_MAX).contains(&i) => Ok(Value::from(i)),
            _ => Err(PyValueError::new_err(format!(
                "{at}: {} is outside ±2**53, which JSON readers do not read back exactly (store it as a str)",
                v.repr()?
            ))),
        };
    }
    if let Ok(f) = v.cast::<PyFloat>() {
        return Number::from_f64(f.value())
            .map(Value::Number)
            .ok_or_else(|| {
                PyValueError::new_err(format!(
                    "{at}: {} is not a JSON number",
                    v.repr().map(|r| r.to_string()).unwrap_or_default()
                ))
            });
    }
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(Value::String(s.to_cow()?.into_owned()));
    }
    if let Ok(l) = v.cast::<PyList>() {
        let mut out = Vec::with_capacity(l.len());
        for (i, item) in l.iter().enumerate() {
            out.push(value(&item, &format!("{at}[{i}]"), depth + 1)?);
        }
        return Ok(Value::Array(out));
    }
    if let Ok(d) = v.cast::<PyDict>() {
        return Ok(Value::Object(object(d, at, depth)?));
    }
    let hint = if v.is_instance_of::<pyo3::types::PyTuple>() {
        " (a tuple would read back as a list: pass a list)"
    } else {
        ""
    };
    Err(PyTypeError::new_err(format!(
        "{at}: {} is not a JSON value{hint}",
        type_name(v)
    )))
}

/// The name of `v`'s type, for a `TypeError` that says what it got.
pub(crate) fn type_name(v: &Bound<'_, PyAny>) -> String {
    v.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}
