//! The design notes are reachable: every page in `docs/` is linked from `docs/README.md` (its
//! index), and every relative link there, and in the top-level README, names a file that
//! exists. A page added without a row, or renamed, fails here.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The targets of the Markdown links `](target)` in `text`, without `#fragment`; external
/// (`scheme:`) and in-page links left out.
fn relative_links(text: &str) -> Vec<String> {
    text.match_indices("](")
        .filter_map(|(at, _)| {
            let rest = &text[at + 2..];
            let target = &rest[..rest.find(')')?];
            let target = target.split('#').next().unwrap_or_default().trim();
            (!target.is_empty() && !target.contains(':')).then(|| target.to_owned())
        })
        .collect()
}

#[test]
fn every_design_note_is_linked_from_the_docs_index() {
    let docs = repo().join("docs");
    let index = std::fs::read_to_string(docs.join("README.md")).unwrap();
    let linked: BTreeSet<String> = relative_links(&index).into_iter().collect();
    let pages: BTreeSet<String> = std::fs::read_dir(&docs)
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".md") && name != "README.md")
        .collect();
    assert!(pages.len() >= 10, "{pages:?}");
    let missing: Vec<&String> = pages.difference(&linked).collect();
    assert!(
        missing.is_empty(),
        "docs/README.md does not link {missing:?}"
    );
    for page in [
        "notifications.md",
        "partner-center-webhooks.md",
        "overview-and-export.md",
        "leads.md",
        "demo.md",
    ] {
        assert!(linked.contains(page), "docs/README.md does not link {page}");
    }
}

#[test]
fn relative_links_in_the_readmes_resolve() {
    for (file, base) in [
        (repo().join("docs/README.md"), repo().join("docs")),
        (repo().join("README.md"), repo()),
    ] {
        let text = std::fs::read_to_string(&file).unwrap();
        let links = relative_links(&text);
        assert!(!links.is_empty(), "{}: no links", file.display());
        for link in links {
            assert!(
                base.join(&link).exists(),
                "{}: the link {link} names no file",
                file.display()
            );
        }
    }
}

#[test]
fn links_are_read_as_written() {
    let text = "see [a](a.md), [b](../b.md#part), [web](https://x.example/) and [here](#top)";
    assert_eq!(relative_links(text), ["a.md", "../b.md"]);
}
