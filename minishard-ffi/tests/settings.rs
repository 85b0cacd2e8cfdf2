//! The C setters are the list of settings (`minishard/src/settings.rs`):
//! the header declares `minishard_config_set_NAME` (`_ms` for a timing) for
//! every setting, each documents the setting's default, and no numeric
//! setter exists that the list does not declare. A setting that is a
//! choice of names ([`CHOICES`]) has a setter taking an enum whose
//! constants are `MINISHARD_NAME_OPTION`, one per option.

use minishard::settings::{CHOICES, SETTINGS};

/// Setters of settings that are not numbers, so not in the list.
const NOT_NUMERIC: &[&str] = &[
    "listen",
    "advertise",
    "cookie",
    "observer",
    "dispatch",
    "tls",
    "metadata",
];

fn header() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../include/minishard.h"
    ))
    .expect("include/minishard.h")
}

/// Each `minishard_config_set_*` declared in `header`, with its doc comment
/// on one line.
fn setters(header: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut doc = String::new();
    for line in header.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("/**") {
            doc.clear();
        } else if let Some(text) = trimmed.strip_prefix('*') {
            if !text.starts_with('/') {
                doc.push(' ');
                doc.push_str(text.trim());
            }
        } else if let Some(at) = line.find("minishard_config_set_") {
            if line.starts_with("minishard_result ") && line.contains('(') {
                let name: String = line[at..].chars().take_while(|c| *c != '(').collect();
                found.push((name, std::mem::take(&mut doc)));
            }
        }
    }
    found
}

fn problems(header: &str) -> Vec<String> {
    let declared = setters(header);
    let mut problems = Vec::new();
    for setting in SETTINGS {
        let wanted = setting.c_setter();
        match declared.iter().find(|(name, _)| *name == wanted) {
            None => problems.push(format!(
                "{} has no C setter: add {wanted} to minishard-ffi/src/config.rs \
                 (see minishard/src/settings.rs) and regenerate the header",
                setting.name
            )),
            Some((_, doc)) if !doc.contains(&format!("default {}", setting.default)) => problems
                .push(format!(
                    "{wanted}'s documentation does not say `default {}`: {doc}",
                    setting.default
                )),
            Some(_) => {}
        }
    }
    for choice in CHOICES {
        let wanted = choice.c_setter();
        let constant =
            |option: &str| format!("MINISHARD_{}_{}", choice.name, option).to_uppercase();
        let Some((_, doc)) = declared.iter().find(|(name, _)| *name == wanted) else {
            problems.push(format!(
                "{} has no C setter: add {wanted} to minishard-ffi/src/config.rs \
                 (see minishard/src/settings.rs) and regenerate the header",
                choice.name
            ));
            continue;
        };
        let default = format!("default {}", constant(choice.default()));
        if !doc.contains(&default) {
            problems.push(format!(
                "{wanted}'s documentation does not say `{default}`: {doc}"
            ));
        }
        for option in choice.options {
            let constant = constant(option);
            if !header.contains(&format!("  {constant} = ")) {
                problems.push(format!(
                    "the header has no constant {constant} for {wanted}"
                ));
            }
        }
    }
    for (name, _) in &declared {
        let stem = name.trim_start_matches("minishard_config_set_");
        let known = NOT_NUMERIC.contains(&stem)
            || SETTINGS.iter().any(|s| s.c_setter() == *name)
            || CHOICES.iter().any(|c| c.c_setter() == *name);
        if !known {
            problems.push(format!(
                "{name} sets nothing minishard/src/settings.rs declares: declare the setting there"
            ));
        }
    }
    problems
}

#[test]
fn every_setting_has_its_c_setter_and_every_setter_a_setting() {
    let header = header();
    assert!(setters(&header).len() >= SETTINGS.len());
    let problems = problems(&header);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_missing_setter_a_stale_default_or_an_undeclared_setter_is_caught() {
    let header = header();
    let without = header.replace(
        "minishard_config_set_send_queue(",
        "minishard_config_set_sendq(",
    );
    assert_eq!(problems(&without).len(), 2, "{:?}", problems(&without));
    let stale = header.replace("(default 4096)", "(default 2048)");
    assert_ne!(stale, header, "send_queue's doc says its default");
    assert_eq!(problems(&stale).len(), 1);
    let no_majority = header.replace("MINISHARD_QUORUM_MAJORITY = ", "MINISHARD_QUORUM_MOST = ");
    assert_ne!(no_majority, header, "the quorum's options are constants");
    assert_eq!(
        problems(&no_majority).len(),
        1,
        "{:?}",
        problems(&no_majority)
    );
    let without = header.replace("minishard_config_set_quorum(", "minishard_config_set_q(");
    assert_eq!(problems(&without).len(), 2, "{:?}", problems(&without));
}
