//! `minishard._minishard`: the pyo3 extension under the `minishard` Python
//! package. It holds the engine handle (`NativeCluster`), adapts a Python
//! object to the engine's callbacks, maps engine errors to the package's
//! exceptions and forwards engine logs to `logging`. Everything a Python
//! user sees first (arguments, typed results, asyncio) is in the pure-Python
//! package on top.

mod callbacks;
mod cluster;
mod errors;
mod logbridge;
mod requests;
mod watch;

use pyo3::prelude::*;

#[pymodule]
fn _minishard(m: &Bound<'_, PyModule>) -> PyResult<()> {
    logbridge::install();
    m.add_class::<cluster::NativeCluster>()?;
    m.add_class::<requests::PyResponder>()?;
    m.add_function(wrap_pyfunction!(logbridge::shutdown_logging, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // The list of settings (minishard/src/settings.rs), for `join`'s
    // checks and the tests that hold its keywords to it.
    let settings: Vec<_> = minishard::settings::SETTINGS
        .iter()
        .map(|s| (s.name, s.unit.name(), s.default, s.min, s.max, s.doc))
        .collect();
    m.add("SETTINGS", pyo3::types::PyTuple::new(m.py(), settings)?)?;
    let choices: Vec<_> = minishard::settings::CHOICES
        .iter()
        .map(|c| (c.name, c.options.to_vec(), c.doc))
        .collect();
    m.add("CHOICES", pyo3::types::PyTuple::new(m.py(), choices)?)?;
    Ok(())
}
