use std::path::{Path, PathBuf};

use ec2_quarantine::aws::DELETING_CALLS_ALLOWED;

/// SDK operations that delete, terminate or detach: none may be called but those allowed.
const DELETING: &[&str] = &[
    ".delete_",
    ".terminate_",
    ".detach_volume",
    ".disassociate_",
    ".deregister_image",
    ".revoke_snapshot",
];

/// Identifiers that match a pattern above but name no operation.
const NOT_OPERATIONS: &[&str] = &["delete_on_termination"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_only_deleting_calls_in_the_code_are_the_allowed_ones() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 10, "read the sources in {}", src.display());
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.strip_prefix(&src).unwrap().display().to_string();
        for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for call in DELETING {
                if let Some(at) = line.find(call) {
                    let method: String = line[at + 1..]
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !NOT_OPERATIONS.contains(&method.as_str()) {
                        found.push(format!("{name}: {method}"));
                    }
                }
            }
        }
    }
    let unexpected: Vec<&String> = found
        .iter()
        .filter(|f| !DELETING_CALLS_ALLOWED.contains(&f.as_str()))
        .collect();
    assert!(
        unexpected.is_empty(),
        "deleting calls outside aws::DELETING_CALLS_ALLOWED: {unexpected:?}"
    );
}

/// The function's role may write only `ec2-quarantine:` tag keys (template.yaml, the
/// `aws:TagKeys` conditions), and AWS refuses a whole create whose tags break that (a group,
/// snapshots). The emulator does not evaluate IAM, so the code is read instead: every tag key
/// written as a literal must be one of ours.
#[test]
fn the_code_writes_no_tag_key_the_function_role_may_not_write() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        // Unit tests inside the sources read tags; only the code above them writes.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for call in [".key(", " tag(", "(tag("] {
            for (at, _) in code.match_indices(call) {
                let rest = code[at + call.len()..].trim_start();
                if let Some(literal) = rest.strip_prefix('"') {
                    let key: String = literal.chars().take_while(|c| *c != '"').collect();
                    if !key.starts_with("ec2-quarantine:") {
                        let name = file.strip_prefix(&src).unwrap().display().to_string();
                        found.push(format!("{name}: {key}"));
                    }
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "tag keys the function role may not write: {found:?}"
    );
}
