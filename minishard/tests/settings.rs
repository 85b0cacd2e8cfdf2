//! README's configuration table is the list of settings
//! (`minishard/src/settings.rs`) as it is: one row per setting, with its
//! default and range, so a setting added, removed or changed there cannot
//! be missing or wrong in README.
//!
//! `MINISHARD_BLESS=1 cargo test -p minishard --test settings` rewrites the
//! table.

use std::path::PathBuf;

const BEGIN: &str = "<!-- settings: generated from minishard/src/settings.rs by `MINISHARD_BLESS=1 cargo test -p minishard --test settings` -->\n";
const END: &str = "<!-- settings: end -->\n";

fn readme() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md")
}

/// README with its table replaced by `table`, or why it cannot be.
fn with_table(readme: &str, table: &str) -> Result<String, String> {
    let start = readme
        .find(BEGIN)
        .ok_or("README.md has no settings table marker")?
        + BEGIN.len();
    let end = readme[start..]
        .find(END)
        .ok_or("README.md's settings table has no end marker")?
        + start;
    Ok(format!("{}{table}{}", &readme[..start], &readme[end..]))
}

#[test]
fn readmes_configuration_table_is_the_list_of_settings() {
    let path = readme();
    let text = std::fs::read_to_string(&path).expect("README.md");
    let wanted = with_table(&text, &minishard::settings::markdown_table()).unwrap();
    if std::env::var_os("MINISHARD_BLESS").is_some() {
        std::fs::write(&path, wanted).expect("write README.md");
        return;
    }
    assert!(
        text == wanted,
        "README.md's configuration table is not minishard/src/settings.rs as it is; \
         rewrite it with `MINISHARD_BLESS=1 cargo test -p minishard --test settings`"
    );
}

#[test]
fn a_stale_table_is_caught() {
    let table = minishard::settings::markdown_table();
    let readme = format!("intro\n{BEGIN}{table}{END}after\n");
    assert_eq!(with_table(&readme, &table).unwrap(), readme);
    let stale = readme.replace("| 4096 frames |", "| 2048 frames |");
    assert_ne!(stale, readme, "the table shows send_queue's default");
    assert_ne!(with_table(&stale, &table).unwrap(), stale);
    assert!(with_table("no table here", &table).is_err());
}
