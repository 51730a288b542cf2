//! `files`: remove files under `path` that match `pattern` and are older
//! than `older_than`, except those `keep_referenced` (a query returning
//! paths relative to `path`) still names. Symlinks are never followed and
//! never removed, so nothing outside `path` can be reached.

use crate::unnamed::Unnamed;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use globset::{Glob, GlobMatcher};
use serde::Serialize;
use serde_json::json;
use tokio_postgres::Client;

use super::{CheckProblem, Counters, Outcome, ReportProblem, Task, TaskContext, TaskError};
use crate::db;
use crate::retention;
use crate::status::Status;

/// The dry run lists at most this many files.
const MAX_LISTED: usize = 200;

/// The keys of a files task, beyond those every task takes.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesFile {
    path: Option<String>,
    pattern: Option<String>,
    older_than: Option<String>,
    keep_referenced: Option<String>,
}

impl super::registry::KindFile for FilesFile {
    const NAME: &'static str = "files";
    type Spec = FilesSpec;

    fn resolve(self, report: &mut ReportProblem<'_>) -> Option<FilesSpec> {
        FilesSpec::resolve(self, report)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct FilesSpec {
    pub path: String,
    pub pattern: String,
    pub older_than: String,
    pub keep_referenced: Option<String>,
}

pub struct FilesPlan {
    root: PathBuf,
    candidates: Vec<Candidate>,
    kept_referenced: u64,
    skipped_symlinks: u64,
}

struct Candidate {
    relative: String,
    path: PathBuf,
    bytes: u64,
}

impl FilesSpec {
    pub(crate) fn resolve(file: FilesFile, report: &mut ReportProblem<'_>) -> Option<FilesSpec> {
        if file.path.is_none() {
            report(
                "path",
                "a files task needs `path`, the directory to clean".into(),
                Some("add `path = \"/var/app/uploads/tmp\"`".into()),
            );
        }
        match &file.older_than {
            None => report(
                "older_than",
                "a files task needs `older_than`".into(),
                Some("add e.g. `older_than = \"7 days\"`".into()),
            ),
            Some(age) => {
                if let Err(problem) = retention::check_written(age) {
                    report("older_than", problem.message, Some(problem.help));
                    return None;
                }
            }
        }
        let pattern = file.pattern.clone().unwrap_or_else(|| "*".into());
        if let Err(err) = Glob::new(&pattern) {
            report(
                "pattern",
                format!("`{pattern}` is not a valid glob: {err}"),
                Some("write e.g. \"*.tmp\" or \"**/*.part\"".into()),
            );
            return None;
        }
        Some(FilesSpec {
            path: file.path.clone()?,
            pattern,
            older_than: file.older_than.clone()?,
            keep_referenced: file.keep_referenced.clone(),
        })
    }

    fn matcher(&self) -> GlobMatcher {
        Glob::new(&self.pattern)
            .expect("checked when the config was read")
            .compile_matcher()
    }

    async fn validate(&self, client: &Client) -> Vec<CheckProblem> {
        let mut problems = Vec::new();
        if let Err(problem) = safe_root(Path::new(&self.path)) {
            problems.push(problem);
        }
        if let Err(age) = retention::check_live(client, &self.older_than).await {
            problems.push(CheckProblem {
                key: "older_than",
                message: age.message,
                help: Some(age.help),
            });
        }
        if let Some(query) = &self.keep_referenced {
            match crate::db::parse_columns(client, query).await {
                Ok(columns) if columns.len() == 1 => {}
                Ok(columns) => problems.push(CheckProblem {
                    key: "keep_referenced",
                    message: format!(
                        "the query returns {} columns; it must return one, the file's path",
                        columns.len()
                    ),
                    help: None,
                }),
                Err(err) => problems.push(CheckProblem {
                    key: "keep_referenced",
                    message: format!("the query is not valid: {}", db::describe(&err)),
                    help: None,
                }),
            }
        }
        problems
    }

    /// The paths the application still references, relative to `path`.
    async fn referenced(&self, client: &Client, root: &Path) -> Result<HashSet<String>, TaskError> {
        let Some(query) = &self.keep_referenced else {
            return Ok(HashSet::new());
        };
        let rows = db::read_only(client, client.simple_query(query)).await?;
        let mut paths = HashSet::new();
        for message in rows {
            if let tokio_postgres::SimpleQueryMessage::Row(row) = message
                && let Some(text) = row.get(0)
            {
                paths.insert(relative_name(root, text));
            }
        }
        Ok(paths)
    }
}

/// Directories a files task never cleans: the system's own (whatever is
/// under them belongs to the system or to other users), and the tops of
/// the trees applications keep their own directories in.
const SYSTEM_DIRECTORIES: &[&str] = &[
    "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/media",
    "/mnt", "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var",
    "/var/lib", "/var/log", "/var/tmp",
];

/// System trees nothing under which is an application's to clean.
const SYSTEM_TREES: &[&str] = &[
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/sbin",
    "/sys",
    "/usr/bin",
    "/usr/lib",
    "/usr/sbin",
    "/usr/share",
];

/// The directory a files task may clean: `path` resolved through `..` and
/// symlinks must exist, be a directory owned by the user pgmaint runs as,
/// and be none of the filesystem root, a system directory or that user's
/// home directory. Checked against the filesystem wherever the config is
/// checked (`check`, `plan`, `run`) and again before each run's walk, since
/// the directory can change between the two.
fn safe_root(path: &Path) -> Result<PathBuf, CheckProblem> {
    let refuse = |message: String, help: &str| CheckProblem {
        key: "path",
        message,
        help: Some(help.into()),
    };
    let shown = path.display();
    let root = std::fs::canonicalize(path).map_err(|err| {
        refuse(
            format!("cannot use directory {shown}: {err}"),
            "create it, or fix the path (relative paths are relative to the config file)",
        )
    })?;
    let resolved = if root.as_path() == path {
        String::new()
    } else {
        format!(" (resolved to {})", root.display())
    };
    let home = std::env::var_os("HOME").and_then(|h| std::fs::canonicalize(h).ok());
    let system = root.parent().is_none()
        || SYSTEM_DIRECTORIES.iter().any(|d| root == Path::new(d))
        || SYSTEM_TREES.iter().any(|d| root.starts_with(d))
        || home.as_deref() == Some(root.as_path());
    if system {
        return Err(refuse(
            format!(
                "{shown}{resolved} is the filesystem root, a system directory or a home directory; a files task removes files under its path"
            ),
            "point `path` at the application's own directory, e.g. \"/var/app/uploads/tmp\"",
        ));
    }
    let metadata = std::fs::metadata(&root).map_err(|err| {
        refuse(
            format!("cannot read directory {shown}: {err}"),
            "check its permissions",
        )
    })?;
    if !metadata.is_dir() {
        return Err(refuse(
            format!("{shown}{resolved} is not a directory"),
            "point `path` at the directory whose files are to be removed",
        ));
    }
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if metadata.uid() != uid {
        return Err(refuse(
            format!(
                "{shown}{resolved} is owned by uid {}, not by the user pgmaint runs as (uid {uid})",
                metadata.uid()
            ),
            "run pgmaint as the application's user, or point `path` at a directory that user owns",
        ));
    }
    Ok(root)
}

/// A referenced path as a path relative to the root: `./a/b`, `a/b` and
/// `<root>/a/b` all name `a/b`.
fn relative_name(root: &Path, text: &str) -> String {
    let path = Path::new(text);
    let relative = path.strip_prefix(root).unwrap_or(path);
    relative
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect::<PathBuf>()
        .to_string_lossy()
        .into_owned()
}

async fn age(client: &Client, interval: &str) -> Result<Duration, tokio_postgres::Error> {
    let seconds: f64 = client
        .row(
            "SELECT extract(epoch FROM $1::text::interval)::float8",
            &[&interval],
        )
        .await?
        .get(0);
    Ok(Duration::from_secs_f64(seconds.max(0.0)))
}

impl Task for FilesSpec {
    type Plan = FilesPlan;

    fn anchor_paths(&mut self, base: &std::path::Path) {
        super::anchor(base, &mut self.path);
    }

    fn target(&self) -> String {
        format!("{}/{}", self.path.trim_end_matches('/'), self.pattern)
    }

    async fn prepare(&self, ctx: &mut TaskContext<'_>) -> Result<FilesPlan, TaskError> {
        let problems = self.validate(ctx.client).await;
        if !problems.is_empty() {
            return Err(TaskError::from_problems(&problems));
        }
        let root = safe_root(Path::new(&self.path))
            .map_err(|p| TaskError::from_problems(std::slice::from_ref(&p)))?;
        let cutoff = SystemTime::now() - age(ctx.client, &self.older_than).await?;
        let referenced = self.referenced(ctx.client, &root).await?;
        let matcher = self.matcher();
        let mut plan = FilesPlan {
            root: root.clone(),
            candidates: Vec::new(),
            kept_referenced: 0,
            skipped_symlinks: 0,
        };
        for entry in walkdir::WalkDir::new(&root)
            .follow_links(false)
            .sort_by_file_name()
        {
            let entry =
                entry.map_err(|e| TaskError::Io(format!("cannot read {}: {e}", root.display())))?;
            if entry.path_is_symlink() {
                plan.skipped_symlinks += 1;
                continue;
            }
            if !entry.file_type().is_file() {
                continue;
            }
            let relative = entry
                .path()
                .strip_prefix(&root)
                .unwrap_or(entry.path())
                .to_string_lossy()
                .into_owned();
            let name_matches = if self.pattern.contains('/') {
                matcher.is_match(&relative)
            } else {
                matcher.is_match(entry.file_name())
            };
            if !name_matches {
                continue;
            }
            let metadata = entry.metadata().map_err(|e| {
                TaskError::Io(format!("cannot read {}: {e}", entry.path().display()))
            })?;
            if metadata.modified().map_or(true, |m| m > cutoff) {
                continue;
            }
            if referenced.contains(&relative) {
                plan.kept_referenced += 1;
                continue;
            }
            plan.candidates.push(Candidate {
                relative,
                path: entry.path().to_path_buf(),
                bytes: metadata.len(),
            });
        }
        Ok(plan)
    }

    async fn describe(
        &self,
        _: &mut TaskContext<'_>,
        plan: &FilesPlan,
    ) -> Result<Outcome, TaskError> {
        let bytes: u64 = plan.candidates.iter().map(|c| c.bytes).sum();
        let listed: Vec<&str> = plan
            .candidates
            .iter()
            .take(MAX_LISTED)
            .map(|c| c.relative.as_str())
            .collect();
        Ok(Outcome {
            status: Status::Succeeded,
            rows: plan.candidates.len() as u64,
            batches: 0,
            retries: 0,
            error: None,
            details: json!({
                "summary": format!("would remove {} file(s), {} bytes, under {}", plan.candidates.len(), bytes, plan.root.display()),
                "path": plan.root.display().to_string(),
                "files": listed,
                "files_listed_truncated": plan.candidates.len() > MAX_LISTED,
                "bytes": bytes,
                "kept_referenced": plan.kept_referenced,
                "skipped_symlinks": plan.skipped_symlinks,
            }),
        })
    }

    async fn execute(
        &self,
        ctx: &mut TaskContext<'_>,
        plan: FilesPlan,
    ) -> Result<Outcome, TaskError> {
        let mut counters = Counters::default();
        let mut freed = 0u64;
        let mut stopped = None;
        ctx.progress.start(plan.candidates.len() as u64, "files");
        let mut seen = 0u64;
        for chunk in plan.candidates.chunks(ctx.options.batch_size as usize) {
            if let Some(reason) = ctx.should_stop() {
                stopped = Some(reason);
                break;
            }
            for candidate in chunk {
                match std::fs::remove_file(&candidate.path) {
                    Ok(()) => {
                        counters.rows += 1;
                        freed += candidate.bytes;
                    }
                    // Gone already (removed by the application): fine.
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(err) => {
                        return Err(TaskError::Io(format!(
                            "cannot remove {}: {err} ({} file(s) removed before it)",
                            candidate.path.display(),
                            counters.rows
                        )));
                    }
                }
            }
            counters.batches += 1;
            seen += chunk.len() as u64;
            ctx.progress.update(seen, counters.rows);
            ctx.record_progress(counters).await?;
            if !ctx.options.pause.0.is_zero() {
                ctx.stop.sleep(ctx.options.pause.0).await;
            }
        }
        ctx.progress.finish();
        let (status, error) = match stopped {
            Some(reason) => (
                Status::Cancelled,
                Some(format!("{reason} after {} file(s)", counters.rows)),
            ),
            None => (Status::Succeeded, None),
        };
        Ok(Outcome {
            status,
            rows: counters.rows,
            batches: counters.batches,
            retries: 0,
            error,
            details: json!({
                "summary": format!("removed {} file(s), {} bytes freed", counters.rows, freed),
                "path": plan.root.display().to_string(),
                "bytes_freed": freed,
                "kept_referenced": plan.kept_referenced,
                "skipped_symlinks": plan.skipped_symlinks,
            }),
        })
    }

    async fn check(&self, client: &Client) -> Vec<CheckProblem> {
        self.validate(client).await
    }

    /// The files it would remove, and those `keep_referenced` keeps.
    fn plan_lines(
        details: &serde_json::Value,
        _: &super::PlanContext<'_>,
    ) -> Option<Vec<super::PlanLine>> {
        use super::PlanLine;
        let plan: PlanDetails = serde_json::from_value(details.clone()).ok()?;
        let mut lines = vec![PlanLine::summary(&plan.summary)];
        lines.extend(PlanLine::list(plan.files));
        if let Some(kept) = plan.kept_referenced
            && kept > 0
        {
            lines.push(PlanLine::Say(format!(
                "Keeps {} file{} that keep_referenced names.",
                crate::output::count(kept),
                if kept == 1 { "" } else { "s" }
            )));
        }
        Some(lines)
    }
}

/// A files dry run's `details`, read back for its text.
#[derive(Debug, serde::Deserialize)]
struct PlanDetails {
    summary: String,
    files: Vec<String>,
    kept_referenced: Option<u64>,
}
