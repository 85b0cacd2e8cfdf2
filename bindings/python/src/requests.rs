//! Requests from Python: the responder a `handle_request` that answers
//! later hands to another thread, and the errors of a request.

use std::sync::Mutex;

use minishard::{RequestError, Responder};
use pyo3::prelude::*;

use crate::errors;

/// Answers one request, once: `respond(data)` or `fail(message)`, from any
/// thread. Garbage-collected unanswered, it answers that the handler failed.
#[pyclass(frozen, module = "minishard._minishard", name = "Responder")]
pub(crate) struct PyResponder {
    responder: Mutex<Option<Responder>>,
    epoch: u64,
}

impl PyResponder {
    pub(crate) fn new(responder: Responder) -> PyResponder {
        PyResponder {
            epoch: responder.epoch(),
            responder: Mutex::new(Some(responder)),
        }
    }

    fn take(&self, py: Python<'_>) -> PyResult<Responder> {
        self.responder
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| errors::invalid(py, "this request was answered already".into()))
    }
}

#[pymethods]
impl PyResponder {
    /// Answers with `data`.
    fn respond(&self, py: Python<'_>, data: std::borrow::Cow<'_, [u8]>) -> PyResult<()> {
        self.take(py)?.respond(data.into_owned());
        Ok(())
    }

    /// Answers that the handler failed, with `message`.
    fn fail(&self, py: Python<'_>, message: String) -> PyResult<()> {
        self.take(py)?.fail(message);
        Ok(())
    }

    /// The epoch of the allocation the request runs in.
    #[getter]
    fn epoch(&self) -> u64 {
        self.epoch
    }
}

/// The exception for a request's error.
pub(crate) fn error(py: Python<'_>, error: RequestError) -> PyErr {
    let message = error.to_string();
    match error {
        RequestError::Timeout => errors::timeout(py, message),
        RequestError::Overloaded => errors::raise(py, "OverloadedError", message),
        RequestError::HandlerFailed(m) => errors::raise(py, "HandlerError", m),
        RequestError::Uncertain => errors::raise(py, "UncertainError", message),
        RequestError::Closed => errors::closed(py),
        _ => errors::invalid(py, message),
    }
}
