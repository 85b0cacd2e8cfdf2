//! README's first command, `minishard demo`, runs to its end: the demo
//! waits for each step's outcome with a deadline and fails otherwise. It
//! makes its crash and splits through its own switch, so it must work in
//! the command as released, without the library's test hooks.

use std::process::Command;

#[test]
fn the_demo_runs_every_step_to_the_end() {
    let output = Command::new(env!("CARGO_BIN_EXE_minishard"))
        .arg("demo")
        .output()
        .expect("the minishard command starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "minishard demo failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    for step in [
        "failed over to",
        "handed over to",
        "the key set before the leave is read back from the new owner",
        "the 2-side is degraded",
        "resolved in",
        "waited for the new owner",
        "land on the winners",
        "both sides' keys are there",
        "demo finished",
    ] {
        assert!(
            stdout.contains(step),
            "no {step:?} in the demo's output:\n{stdout}"
        );
    }
}
