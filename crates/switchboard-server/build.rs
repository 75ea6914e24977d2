//! Names the commit this crate is built from, for `switchboard_build_info{commit}`:
//! `SWITCHBOARD_COMMIT` when the builder sets it (a container build without `.git`), else
//! `git rev-parse --short=12 HEAD`, else `unknown`.

fn main() {
    println!("cargo:rerun-if-env-changed=SWITCHBOARD_COMMIT");
    let commit = std::env::var("SWITCHBOARD_COMMIT").ok().filter(|c| !c.is_empty()).or_else(git_head);
    // Rebuild when HEAD moves: a checkout changes HEAD, a commit the branch it names.
    if let Ok(head) = std::fs::read_to_string("../../.git/HEAD") {
        println!("cargo:rerun-if-changed=../../.git/HEAD");
        if let Some(branch) = head.trim().strip_prefix("ref: ") {
            let path = format!("../../.git/{branch}");
            if std::path::Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
    println!("cargo:rustc-env=SWITCHBOARD_COMMIT={}", commit.unwrap_or_else(|| "unknown".to_owned()));
}

fn git_head() -> Option<String> {
    let output = std::process::Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output().ok()?;
    let commit = String::from_utf8(output.stdout).ok()?.trim().to_owned();
    (output.status.success() && !commit.is_empty() && commit.bytes().all(|b| b.is_ascii_hexdigit())).then_some(commit)
}
