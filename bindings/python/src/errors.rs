//! Every engine error becomes an exception of the package's hierarchy
//! (`minishard.Error` and its subclasses, defined in `minishard/_errors.py`
//! so they can also derive from the matching built-in exceptions).

use minishard::Error;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyType;

/// The exception class `name` of `minishard._errors`.
fn class<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyType>> {
    Ok(py
        .import("minishard._errors")?
        .getattr(name)?
        .cast_into::<PyType>()?)
}

/// An exception of class `name` with `message`. If the package's errors
/// cannot be imported (a broken install), the import error says why.
pub(crate) fn raise(py: Python<'_>, name: &str, message: String) -> PyErr {
    match class(py, name) {
        Ok(class) => PyErr::from_type(class, message),
        Err(import) => {
            let err = PyRuntimeError::new_err(format!(
                "{message} (and minishard._errors.{name} cannot be loaded)"
            ));
            err.set_cause(py, Some(import));
            err
        }
    }
}

pub(crate) fn config(py: Python<'_>, message: String) -> PyErr {
    raise(py, "ConfigError", message)
}

pub(crate) fn invalid(py: Python<'_>, message: String) -> PyErr {
    raise(py, "InvalidArgumentError", message)
}

pub(crate) fn timeout(py: Python<'_>, message: String) -> PyErr {
    raise(py, "TimeoutError", message)
}

pub(crate) fn closed(py: Python<'_>) -> PyErr {
    raise(
        py,
        "ClosedError",
        "the cluster handle has left the cluster".into(),
    )
}

/// The exception for an engine error.
pub(crate) fn from_engine(py: Python<'_>, error: Error) -> PyErr {
    match error {
        Error::Config(m) => config(py, m),
        Error::Io(m) => raise(py, "IOError", m),
        Error::Timeout(m) => timeout(py, m),
        Error::Closed => closed(py),
        Error::Callback { callback, message } => raise(
            py,
            "CallbackError",
            format!("the {callback} callback failed at join: {message}"),
        ),
        Error::InvalidArgument(m) => invalid(py, m),
        Error::Misconfigured(m) => raise(py, "MisconfiguredError", m),
    }
}
