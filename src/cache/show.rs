//! `--show-cache`: the old tool's two tables (a summary: Size, Entries,
//! Oldest, Newest; one row per entry: Size, Added On, Nb. Used, Last Used,
//! Source), sorted by added date, with what the policy would evict marked;
//! partial downloads are rows too, their Source followed by `(partial, N%)`;
//! `Cache is empty.` for an empty cache. [`Report`] serialises to the JSON
//! form of the same data (`--show-cache --json`).

use serde::Serialize;

use super::entry::Entry;
use super::evict::plan;
use super::policy::Policy;

/// Totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Bytes of all entries.
    pub size: u64,
    /// Number of entries.
    pub entries: usize,
    /// Earliest `added`, RFC 3339 UTC.
    pub oldest: Option<String>,
    /// Latest `added`, RFC 3339 UTC.
    pub newest: Option<String>,
}

/// One entry's row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportEntry {
    /// Key text.
    pub key: String,
    /// Image platform.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// Source URL or image reference.
    pub source: String,
    /// Bytes.
    pub size: u64,
    /// Payload digest.
    pub sha256: String,
    /// RFC 3339 UTC.
    pub added_on: String,
    /// Builds that used it.
    pub nb_used: u64,
    /// RFC 3339 UTC.
    pub last_used: String,
    /// Why the policy would evict it, if it would.
    pub evict: Option<String>,
    /// A partial download: the percentage of it that arrived (`size` is
    /// the bytes it holds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partial_percent: Option<u64>,
}

/// `--show-cache` data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Totals.
    pub summary: Summary,
    /// Rows, oldest first.
    pub entries: Vec<ReportEntry>,
}

impl Report {
    /// Build the report of `entries` under `policy` at `now`.
    pub fn new(policy: &Policy, mut entries: Vec<Entry>, now: u64) -> Report {
        entries.sort_by(|a, b| a.added.cmp(&b.added).then_with(|| a.key.cmp(&b.key)));
        let mut evict: Vec<Option<String>> = vec![None; entries.len()];
        for p in plan(policy, &entries, now) {
            if let Some(slot) = evict.get_mut(p.index) {
                *slot = Some(p.reason.to_string());
            }
        }
        let summary = Summary {
            size: entries.iter().map(|e| e.size).sum(),
            entries: entries.len(),
            oldest: entries.iter().map(|e| e.added).min().map(rfc3339),
            newest: entries.iter().map(|e| e.added).max().map(rfc3339),
        };
        let entries = entries
            .into_iter()
            .zip(evict)
            .map(|(e, evict)| (e.percent(), e, evict))
            .map(|(partial_percent, e, evict)| ReportEntry {
                source: if e.source.is_empty() {
                    e.key.clone()
                } else {
                    e.source.clone()
                },
                key: e.key,
                platform: e.platform,
                size: e.size,
                sha256: e.sha256,
                added_on: rfc3339(e.added),
                nb_used: e.use_count,
                last_used: rfc3339(e.last_used),
                evict,
                partial_percent,
            })
            .collect();
        Report { summary, entries }
    }

    /// The tables, as text.
    pub fn render_text(&self) -> String {
        if self.entries.is_empty() {
            return "Cache is empty.\n".to_string();
        }
        let mut out = table(
            &["Size", "Entries", "Oldest", "Newest"],
            &[vec![
                human_size(self.summary.size),
                self.summary.entries.to_string(),
                self.summary
                    .oldest
                    .as_deref()
                    .map(short_date)
                    .unwrap_or_default(),
                self.summary
                    .newest
                    .as_deref()
                    .map(short_date)
                    .unwrap_or_default(),
            ]],
        );
        out.push('\n');
        let any_evicted = self.entries.iter().any(|e| e.evict.is_some());
        let mut headers = vec!["Size", "Added On", "Nb. Used", "Last Used", "Source"];
        if any_evicted {
            headers.push("Evict");
        }
        let rows: Vec<Vec<String>> = self
            .entries
            .iter()
            .map(|e| {
                let mut source = e.source.clone();
                if let Some(p) = &e.platform {
                    source.push_str(&format!(" ({p})"));
                }
                if let Some(pct) = e.partial_percent {
                    source.push_str(&format!(" (partial, {pct}%)"));
                }
                let mut row = vec![
                    human_size(e.size),
                    short_date(&e.added_on),
                    e.nb_used.to_string(),
                    short_date(&e.last_used),
                    source,
                ];
                if any_evicted {
                    row.push(e.evict.clone().unwrap_or_default());
                }
                row
            })
            .collect();
        out.push_str(&table(&headers, &rows));
        out
    }
}

fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let rule: String = widths
        .iter()
        .map(|w| "-".repeat(w + 2))
        .collect::<Vec<_>>()
        .join("+");
    let rule = format!("+{rule}+\n");
    let line = |cells: Vec<&str>| {
        let inner: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!(" {c:<w$} "))
            .collect();
        format!("|{}|\n", inner.join("|"))
    };
    let mut out = rule.clone();
    out.push_str(&line(headers.to_vec()));
    out.push_str(&rule);
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out.push_str(&rule);
    out
}

/// `2024-01-31T12:00:00Z` → `2024-01-31 12:00`.
fn short_date(rfc: &str) -> String {
    rfc.get(..16)
        .map_or_else(|| rfc.to_string(), |s| s.replace('T', " "))
}

/// Decimal units, as the old tool's `humanfriendly.format_size`.
pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["bytes", "KB", "MB", "GB", "TB", "PB"];
    let mut unit = 0;
    let mut scaled = bytes;
    while scaled >= 1000 && unit + 1 < UNITS.len() {
        scaled /= 1000;
        unit += 1;
    }
    if unit == 0 {
        return format!("{bytes} bytes");
    }
    // Two decimals, computed in integers: bytes / 1000^unit.
    let div = 1000u128.pow(u32::try_from(unit).unwrap_or(0));
    let hundredths = (u128::from(bytes) * 100 + div / 2) / div;
    let (whole, frac) = (hundredths / 100, hundredths % 100);
    let text = format!("{whole}.{frac:02}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text} {}", UNITS[unit])
}

/// Unix seconds → `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian, UTC; the
/// days-to-civil conversion of Howard Hinnant's `chrono`-compatible
/// algorithms paper).
pub(crate) fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let z = i128::from(days) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i128::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_match_known_instants() {
        // Reference values from `date -u -d @N +%FT%TZ`.
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_704_067_199), "2023-12-31T23:59:59Z");
        assert_eq!(rfc3339(4_107_542_400), "2100-03-01T00:00:00Z");
    }

    #[test]
    fn sizes_are_decimal() {
        assert_eq!(human_size(0), "0 bytes");
        assert_eq!(human_size(999), "999 bytes");
        assert_eq!(human_size(1000), "1 KB");
        assert_eq!(human_size(1_500_000), "1.5 MB");
        assert_eq!(human_size(10 << 30), "10.74 GB");
    }
}
