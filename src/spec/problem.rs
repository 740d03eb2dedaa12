//! Problems found in definition files, how they are shown, and where they are.
//!
//! Owns [`Problem`], [`SpecErrors`], the byte offset → 1-based line:column
//! mapping and the "did you mean" suggestions. Invariant: a problem's line and
//! column, when present, point into the file named by its `file` as it was
//! read; columns count characters, not bytes.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;

/// One thing wrong with a definition folder.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// The file (or, for folder-level problems, the folder) as given to `load`.
    pub file: PathBuf,
    /// 1-based line, when the problem has a place in the file.
    pub line: Option<usize>,
    /// 1-based column (in characters), when known.
    pub column: Option<usize>,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for Problem {
    /// `dataflows/playback.toml:12:7: error: unknown key `tpye` in [[nodes]]`
    /// followed, when there is one, by `\n  hint: ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": error: {}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Every problem found by [`crate::spec::load`], in file then position order.
#[derive(Debug, thiserror::Error)]
#[error("{}", render(.problems))]
pub struct SpecErrors {
    pub problems: Vec<Problem>,
}

/// Each problem as a block, blocks separated by a blank line, then a count
/// line such as `3 problems in 2 files`.
fn render(problems: &[Problem]) -> String {
    let mut out = String::new();
    for p in problems {
        out.push_str(&p.to_string());
        out.push_str("\n\n");
    }
    let files: BTreeSet<&PathBuf> = problems.iter().map(|p| &p.file).collect();
    let plural = |n: usize, word: &str| {
        if n == 1 {
            format!("{n} {word}")
        } else {
            format!("{n} {word}s")
        }
    };
    out.push_str(&format!(
        "{} in {}",
        plural(problems.len(), "problem"),
        plural(files.len(), "file")
    ));
    out
}

/// Maps byte offsets of one text to 1-based (line, column).
pub(crate) struct LineIndex<'s> {
    text: &'s str,
    /// Byte offset where each line starts; the first is always 0.
    starts: Vec<usize>,
}

impl<'s> LineIndex<'s> {
    pub(crate) fn new(text: &'s str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { text, starts }
    }

    /// The 1-based line and column (in characters) of byte `offset`; offsets
    /// past the end map to the end of the text.
    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        // `starts[0] == 0 <= offset`, so the count is at least 1.
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts.get(line - 1).copied().unwrap_or(0);
        let column = match self.text.get(start..offset) {
            Some(prefix) => prefix.chars().count(),
            None => offset - start,
        };
        (line, column + 1)
    }
}

/// The candidate closest to `word`, when it is close enough to be a likely
/// typo (edit distance at most a third of the word, and at least 1).
pub(crate) fn did_you_mean<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let lower = word.to_lowercase();
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(&lower, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// `` `a`, `b` or `c` ``
pub(crate) fn one_of(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("`{i}`")).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let text = "ab\nçd = 1\n\nx";
        let idx = LineIndex::new(text);
        assert_eq!(idx.position(0), (1, 1));
        assert_eq!(idx.position(2), (1, 3)); // the newline itself
        assert_eq!(idx.position(3), (2, 1));
        // `ç` is two bytes but one column.
        let d = text.find('d').expect("d");
        assert_eq!(idx.position(d), (2, 2));
        assert_eq!(idx.position(text.len() - 1), (4, 1));
        assert_eq!(idx.position(text.len()), (4, 2));
        assert_eq!(idx.position(text.len() + 100), (4, 2));
        assert_eq!(LineIndex::new("").position(0), (1, 1));
    }

    #[test]
    fn crlf_lines() {
        let idx = LineIndex::new("a\r\nb");
        assert_eq!(idx.position(3), (2, 1));
    }

    #[test]
    fn suggestions() {
        let keys = ["type", "id", "props", "retention", "when", "required"];
        assert_eq!(did_you_mean("tpye", &keys), Some("type"));
        assert_eq!(did_you_mean("retension", &keys), Some("retention"));
        assert_eq!(did_you_mean("Type", &keys), Some("type"));
        assert_eq!(did_you_mean("colour", &keys), None);
        assert_eq!(one_of(&["s", "ms", "us"]), "`s`, `ms` or `us`");
        assert_eq!(one_of(&["s"]), "`s`");
    }

    #[test]
    fn problem_display() {
        let p = Problem {
            file: PathBuf::from("dataflows/playback.toml"),
            line: Some(12),
            column: Some(7),
            message: "unknown key `tpye` in [[nodes]]".to_string(),
            hint: Some("did you mean `type`?".to_string()),
        };
        assert_eq!(
            p.to_string(),
            "dataflows/playback.toml:12:7: error: unknown key `tpye` in [[nodes]]\n  hint: did you mean `type`?"
        );
        let q = Problem {
            line: None,
            column: None,
            hint: None,
            message: "no rules".to_string(),
            ..p.clone()
        };
        assert_eq!(q.to_string(), "dataflows/playback.toml: error: no rules");
        let e = SpecErrors {
            problems: vec![p, q],
        };
        assert!(e.to_string().ends_with("\n\n2 problems in 1 file"));
    }
}
