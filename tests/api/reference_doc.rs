//! The documentation against the code, with no server: every setting the code reads, every route and
//! every command and flag is in `docs/reference.md`, and only there; the README stays short; every
//! relative link in the README and `docs/` leads to a file (and a heading) that exists.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

const README_MAX_LINES: usize = 300;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
}

fn reference() -> String {
    read(&repo().join("docs/reference.md"))
}

/// The README and every page under `docs/`, by path relative to the repository.
fn markdown_pages() -> Vec<(PathBuf, String)> {
    let mut pages = vec![PathBuf::from("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .map(|path| path.strip_prefix(repo()).unwrap().to_path_buf())
        .collect();
    docs.sort();
    pages.extend(docs);
    pages.into_iter().map(|page| (page.clone(), read(&repo().join(&page)))).collect()
}

/// The lines of a Markdown text outside fenced code blocks, with their numbers (from 1).
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut in_fence = false;
    let mut lines = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if !in_fence {
            lines.push((index + 1, line));
        }
    }
    lines
}

/// The `## title` section of a Markdown text, up to the next heading of the same level.
fn section<'a>(text: &'a str, title: &str) -> &'a str {
    let heading = format!("\n## {title}\n");
    let start = text.find(&heading).unwrap_or_else(|| panic!("no `## {title}` section")) + heading.len();
    let rest = &text[start..];
    rest.find("\n## ").map_or(rest, |end| &rest[..end])
}

/// The first cell of every table row of `text` (outside code blocks), without its backticks.
fn first_cells(text: &str) -> Vec<String> {
    prose_lines(text)
        .into_iter()
        .filter_map(|(_, line)| line.trim().strip_prefix('|'))
        .filter_map(|row| row.split('|').next())
        .map(|cell| cell.trim().to_owned())
        .filter(|cell| !cell.is_empty() && !cell.chars().all(|c| c == '-' || c == ':'))
        .collect()
}

/// A cell that is a setting's name in backticks: `GATEHOUSE_…` or `DATABASE_URL`.
fn names_a_setting(cell: &str) -> Option<String> {
    let name = cell.strip_prefix('`')?.strip_suffix('`')?;
    (name.starts_with("GATEHOUSE_") || name == "DATABASE_URL").then(|| name.to_owned())
}

/// A cell that is a command line in backticks, as a row of a table of commands has.
fn names_a_command(cell: &str) -> bool {
    cell.starts_with("`gatehouse ") && cell.ends_with('`')
}

/// Every `.rs` file under `dir`.
fn rust_sources(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(rust_sources(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
    found
}

/// Every environment variable the code under `src/` names: `GATEHOUSE_…` anywhere (a lookup, an
/// error message, a doc comment), clap's `env = "…"`, plus the two read without a `GATEHOUSE_`
/// prefix (`DATABASE_URL` by the settings, `RUST_LOG` by env_logger). Names beginning with
/// `GATEHOUSE_TEST_` belong to the test harness, which `docs/development.md` describes.
fn settings_the_code_reads() -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    names.insert("DATABASE_URL".to_owned(), "src/config.rs".to_owned());
    names.insert("RUST_LOG".to_owned(), "src/main.rs (env_logger)".to_owned());
    for path in rust_sources(&repo().join("src")) {
        let source = read(&path);
        let shown = path.strip_prefix(repo()).unwrap().display().to_string();
        let is_name = |c: char| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_';
        for (at, _) in source.match_indices("GATEHOUSE_") {
            if source[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let name: String = source[at..].chars().take_while(|c| is_name(*c)).collect();
            let name = name.trim_end_matches('_').to_owned();
            if name.len() > "GATEHOUSE_".len() && !name.starts_with("GATEHOUSE_TEST_") {
                names.entry(name).or_insert_with(|| shown.clone());
            }
        }
        for (at, _) in source.match_indices("env = \"") {
            let rest = &source[at + "env = \"".len()..];
            if let Some(name) = rest.split('"').next().filter(|name| !name.is_empty() && name.chars().all(is_name)) {
                names.entry(name.to_owned()).or_insert_with(|| shown.clone());
            }
        }
    }
    names
}

/// The variables of the reference's configuration table.
fn configuration_table() -> BTreeSet<String> {
    let reference = reference();
    first_cells(section(&reference, "Configuration"))
        .iter()
        .filter_map(|cell| cell.strip_prefix('`').and_then(|cell| cell.split('`').next()))
        .filter(|name| *name != "variable")
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_setting_the_code_reads_is_in_the_reference() {
    let table = configuration_table();
    let missing: Vec<String> = settings_the_code_reads()
        .into_iter()
        .filter(|(name, _)| !table.contains(name))
        .map(|(name, file)| format!("{name} (read in {file})"))
        .collect();
    assert!(missing.is_empty(), "not in the configuration table of docs/reference.md: {missing:?}");
}

#[test]
fn the_reference_lists_no_setting_the_code_does_not_read() {
    let read = settings_the_code_reads();
    let stale: Vec<String> = configuration_table().into_iter().filter(|name| !read.contains_key(name)).collect();
    assert!(stale.is_empty(), "docs/reference.md documents settings no code reads: {stale:?}");
}

#[test]
fn settings_and_commands_are_tabled_only_in_the_reference() {
    for (page, text) in markdown_pages() {
        let cells = first_cells(&text);
        let settings: Vec<String> = cells.iter().filter_map(|cell| names_a_setting(cell)).collect();
        let commands: Vec<&String> = cells.iter().filter(|cell| names_a_command(cell)).collect();
        if page == Path::new("docs/reference.md") {
            let configuration = section(&text, "Configuration");
            let outside = settings.len() - first_cells(configuration).iter().filter_map(|c| names_a_setting(c)).count();
            assert_eq!(outside, 0, "reference.md tables settings outside its Configuration section");
            let command_line = section(&text, "Command line");
            assert_eq!(
                commands.len(),
                first_cells(command_line).iter().filter(|c| names_a_command(c)).count(),
                "reference.md tables commands outside its Command line section"
            );
            continue;
        }
        assert!(settings.is_empty(), "{}: a table of settings {settings:?}: link to the reference", page.display());
        assert!(commands.is_empty(), "{}: a table of commands {commands:?}: link to the reference", page.display());
    }
}

#[test]
fn the_readme_is_read_in_ten_minutes() {
    let lines = read(&repo().join("README.md")).lines().count();
    assert!(
        lines <= README_MAX_LINES,
        "README.md has {lines} lines, at most {README_MAX_LINES}: move the rest to docs/"
    );
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .flat_map(char::to_lowercase)
        .collect()
}

/// The anchors of a Markdown page's headings (a repeated heading gets `-1`, `-2`, … as on GitHub).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut found = BTreeSet::new();
    for (_, line) in prose_lines(text) {
        let Some(heading) = line.strip_prefix('#').map(|rest| rest.trim_start_matches('#')) else { continue };
        if !heading.starts_with(' ') {
            continue;
        }
        let base = anchor(heading);
        let count = seen.entry(base.clone()).or_insert(0);
        found.insert(if *count == 0 { base.clone() } else { format!("{base}-{count}") });
        *count += 1;
    }
    found
}

/// The targets of the Markdown links and images of a text (outside code blocks), with line numbers.
fn link_targets(text: &str) -> Vec<(usize, String)> {
    let mut targets = Vec::new();
    for (number, line) in prose_lines(text) {
        for (at, _) in line.match_indices("](") {
            let rest = &line[at + 2..];
            if let Some(end) = rest.find(')') {
                targets.push((number, rest[..end].trim().to_owned()));
            }
        }
    }
    targets
}

#[test]
fn every_relative_link_in_the_docs_leads_somewhere() {
    let mut broken = Vec::new();
    for (page, text) in markdown_pages() {
        let directory = repo().join(&page).parent().unwrap().to_path_buf();
        for (line, target) in link_targets(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, fragment) = target.split_once('#').map_or((target.as_str(), None), |(f, a)| (f, Some(a)));
            let path = if file.is_empty() { repo().join(&page) } else { directory.join(file) };
            let at = format!("{}:{line}: {target}", page.display());
            if !path.exists() {
                broken.push(format!("{at} (no such file)"));
                continue;
            }
            if let Some(fragment) = fragment {
                let is_markdown = path.extension().is_some_and(|ext| ext == "md");
                if !is_markdown || !anchors(&read(&path)).contains(fragment) {
                    broken.push(format!("{at} (no such heading)"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// The `(method, path)` pairs of the route table in `src/routes/mod.rs`.
fn routes() -> Vec<(String, String)> {
    let source = read(&repo().join("src/routes/mod.rs"));
    let start = source.find("pub const ROUTES").expect("src/routes/mod.rs has no ROUTES table");
    let table = &source[start..];
    let table = &table[..table.find("];").expect("the ROUTES table does not end")];
    let mut routes = Vec::new();
    for line in table.lines() {
        let quoted: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
        if let [method, path] = quoted[..] {
            routes.push((method.to_owned(), path.to_owned()));
        }
    }
    assert!(routes.len() > 10, "found only {} routes in ROUTES: has its shape changed?", routes.len());
    routes
}

#[test]
fn every_route_is_in_the_reference() {
    let reference = reference();
    let missing: Vec<String> = routes()
        .into_iter()
        .map(|(method, path)| format!("`{method} {path}"))
        .filter(|route| {
            !reference
                .match_indices(route.as_str())
                .any(|(at, _)| reference[at + route.len()..].starts_with(['`', '?', ' ']))
        })
        .collect();
    assert!(missing.is_empty(), "routes not in docs/reference.md: {missing:?}");
}

/// `gatehouse ARGS --help`.
fn help(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_gatehouse")).args(args).arg("--help").output().unwrap();
    assert!(output.status.success(), "gatehouse {args:?} --help failed");
    String::from_utf8(output.stdout).unwrap()
}

/// The entries of a `Commands:` or `Options:` block of clap's help.
fn help_block<'a>(help: &'a str, title: &str) -> Vec<&'a str> {
    help.lines()
        .skip_while(|line| *line != title)
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .filter(|line| line.starts_with("  "))
        .map(str::trim)
        .collect()
}

/// Every command that takes no subcommand, as its words after `gatehouse`, with its flags.
fn commands(path: Vec<String>, found: &mut Vec<(Vec<String>, Vec<String>)>) {
    let args: Vec<&str> = path.iter().map(String::as_str).collect();
    let help = help(&args);
    let subcommands: Vec<String> = help_block(&help, "Commands:")
        .into_iter()
        .filter_map(|entry| entry.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect();
    if subcommands.is_empty() {
        let flags = help_block(&help, "Options:")
            .into_iter()
            .flat_map(|entry| entry.split([' ', ',']).take_while(|word| word.starts_with('-') || word.is_empty()))
            .filter(|word| word.starts_with('-') && !matches!(*word, "-h" | "--help" | "-V" | "--version"))
            .map(str::to_owned)
            .collect();
        found.push((path, flags));
        return;
    }
    for subcommand in subcommands {
        let mut deeper = path.clone();
        deeper.push(subcommand);
        commands(deeper, found);
    }
}

#[test]
fn every_command_and_flag_is_in_the_reference() {
    let reference = reference();
    let table = first_cells(section(&reference, "Command line"));
    let mut found = Vec::new();
    commands(Vec::new(), &mut found);
    assert!(found.len() > 5, "found only {found:?} in gatehouse --help");
    let mut missing = Vec::new();
    for (path, flags) in found {
        let command = format!("`gatehouse {}", path.join(" "));
        let Some(row) = table
            .iter()
            .find(|cell| cell.strip_prefix(command.as_str()).is_some_and(|rest| rest.starts_with([' ', '`'])))
        else {
            missing.push(command);
            continue;
        };
        missing.extend(
            flags.into_iter().filter(|flag| !row.contains(flag.as_str())).map(|flag| format!("{command} {flag}")),
        );
    }
    assert!(missing.is_empty(), "not in the command table of docs/reference.md: {missing:?}");
}
