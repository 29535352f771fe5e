//! Retention: which backups a keep-last/hourly/daily/weekly/monthly/yearly policy keeps,
//! following Proxmox Backup Server's documented rules.
//!
//! Backups are taken newest first. `keep-last N` keeps the N newest. Then each of `hourly`,
//! `daily`, `weekly` (ISO weeks, Monday to Sunday, so 2025-12-31 is in week 2026-W01),
//! `monthly` and `yearly`, in that order, keeps the newest backup of each of the next N periods
//! that have backups (periods without backups do not count) and marks older backups of the
//! same period for removal. A period already covered by a backup kept by an earlier option is
//! skipped and does not count towards N, so each option only reaches back past what the earlier
//! ones kept. Whatever no option keeps is removed; a policy with no option set keeps everything.
//! Periods are computed in UTC (Proxmox uses the server's local time zone).

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How many backups to keep by each rule (0: the rule is off).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeepPolicy {
    /// The newest N backups.
    #[serde(default)]
    pub last: u32,
    /// The newest backup of each of N hours.
    #[serde(default)]
    pub hourly: u32,
    /// The newest backup of each of N days.
    #[serde(default)]
    pub daily: u32,
    /// The newest backup of each of N ISO weeks.
    #[serde(default)]
    pub weekly: u32,
    /// The newest backup of each of N months.
    #[serde(default)]
    pub monthly: u32,
    /// The newest backup of each of N years.
    #[serde(default)]
    pub yearly: u32,
}

impl KeepPolicy {
    /// Whether any rule is set (with none set, everything is kept).
    pub fn keeps_something(&self) -> bool {
        self.last + self.hourly + self.daily + self.weekly + self.monthly + self.yearly > 0
    }
}

/// Why a backup is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeepReason {
    /// No rule is set.
    NoPolicy,
    /// `keep-last`.
    Last,
    /// `keep-hourly`.
    Hourly,
    /// `keep-daily`.
    Daily,
    /// `keep-weekly`.
    Weekly,
    /// `keep-monthly`.
    Monthly,
    /// `keep-yearly`.
    Yearly,
}

/// The verdict on one backup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PruneMark {
    /// Kept, by this rule.
    Keep(KeepReason),
    /// To be removed.
    Remove,
}

/// Names the period (hour, day, ...) backup `i` falls in.
type PeriodOf<'a> = &'a dyn Fn(usize) -> String;

/// Applies `policy` to backups taken at `times` (any order); returns a mark per backup, in
/// the same order.
pub fn plan(times: &[DateTime<Utc>], policy: &KeepPolicy) -> Vec<PruneMark> {
    if !policy.keeps_something() {
        return vec![PruneMark::Keep(KeepReason::NoPolicy); times.len()];
    }
    let mut order: Vec<usize> = (0..times.len()).collect();
    order.sort_by(|&a, &b| times[b].cmp(&times[a]).then(b.cmp(&a)));
    let mut marks: Vec<Option<PruneMark>> = vec![None; times.len()];
    let rules: [(u32, KeepReason, PeriodOf); 6] = [
        (policy.last, KeepReason::Last, &|i| i.to_string()),
        (policy.hourly, KeepReason::Hourly, &|i| {
            times[i].format("%Y/%m/%d/%H").to_string()
        }),
        (policy.daily, KeepReason::Daily, &|i| {
            times[i].format("%Y/%m/%d").to_string()
        }),
        (policy.weekly, KeepReason::Weekly, &|i| {
            times[i].format("%G/%V").to_string()
        }),
        (policy.monthly, KeepReason::Monthly, &|i| {
            times[i].format("%Y/%m").to_string()
        }),
        (policy.yearly, KeepReason::Yearly, &|i| {
            times[i].format("%Y").to_string()
        }),
    ];
    for (keep, reason, select) in rules {
        if keep > 0 {
            mark_selections(&mut marks, &order, keep as usize, reason, select);
        }
    }
    marks
        .into_iter()
        .map(|m| m.unwrap_or(PruneMark::Remove))
        .collect()
}

/// One rule: keep the newest unmarked backup of each of the next `keep` periods not already
/// covered by a kept backup; mark the others in those periods for removal.
fn mark_selections(
    marks: &mut [Option<PruneMark>],
    order: &[usize],
    keep: usize,
    reason: KeepReason,
    select: PeriodOf,
) {
    let already: HashSet<String> = order
        .iter()
        .filter(|&&i| matches!(marks[i], Some(PruneMark::Keep(_))))
        .map(|&i| select(i))
        .collect();
    let mut included = HashSet::new();
    for &i in order {
        if marks[i].is_some() {
            continue;
        }
        let period = select(i);
        if already.contains(&period) {
            continue;
        }
        if included.contains(&period) {
            marks[i] = Some(PruneMark::Remove);
        } else {
            if included.len() >= keep {
                break;
            }
            included.insert(period);
            marks[i] = Some(PruneMark::Keep(reason));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::KeepReason::*;
    use super::PruneMark::{Keep, Remove};
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    struct Case {
        name: &'static str,
        policy: KeepPolicy,
        /// (time, expected mark), newest first as a person would write the table.
        table: &'static [(&'static str, PruneMark)],
    }

    const CASES: &[Case] = &[
        Case {
            name: "no rule keeps everything",
            policy: KeepPolicy {
                last: 0,
                hourly: 0,
                daily: 0,
                weekly: 0,
                monthly: 0,
                yearly: 0,
            },
            table: &[
                ("2026-03-02T05:00:00Z", Keep(NoPolicy)),
                ("2026-03-01T05:00:00Z", Keep(NoPolicy)),
            ],
        },
        Case {
            name: "keep-last 2",
            policy: KeepPolicy {
                last: 2,
                hourly: 0,
                daily: 0,
                weekly: 0,
                monthly: 0,
                yearly: 0,
            },
            table: &[
                ("2026-03-05T05:00:00Z", Keep(Last)),
                ("2026-03-04T05:00:00Z", Keep(Last)),
                ("2026-03-03T05:00:00Z", Remove),
                ("2026-03-02T05:00:00Z", Remove),
            ],
        },
        Case {
            name: "keep-hourly 2: newest of each hour, hours without backups do not count",
            policy: KeepPolicy {
                last: 0,
                hourly: 2,
                daily: 0,
                weekly: 0,
                monthly: 0,
                yearly: 0,
            },
            table: &[
                ("2026-03-02T10:59:00Z", Keep(Hourly)),
                ("2026-03-02T10:01:00Z", Remove),
                ("2026-03-02T08:30:00Z", Keep(Hourly)),
                ("2026-03-02T08:00:00Z", Remove),
                ("2026-03-02T07:00:00Z", Remove),
            ],
        },
        Case {
            name: "keep-daily 3 skips days without backups",
            policy: KeepPolicy {
                last: 0,
                hourly: 0,
                daily: 3,
                weekly: 0,
                monthly: 0,
                yearly: 0,
            },
            table: &[
                ("2026-03-10T23:00:00Z", Keep(Daily)),
                ("2026-03-10T08:00:00Z", Remove),
                ("2026-03-09T12:00:00Z", Keep(Daily)),
                // no backup on 03-08
                ("2026-03-07T12:00:00Z", Keep(Daily)),
                ("2026-03-06T12:00:00Z", Remove),
            ],
        },
        Case {
            name: "keep-weekly uses ISO weeks across the new year",
            policy: KeepPolicy {
                last: 0,
                hourly: 0,
                daily: 0,
                weekly: 2,
                monthly: 0,
                yearly: 0,
            },
            table: &[
                ("2026-01-02T05:00:00Z", Keep(Weekly)), // Fri, 2026-W01
                ("2025-12-31T05:00:00Z", Remove),       // Wed, also 2026-W01
                ("2025-12-28T05:00:00Z", Keep(Weekly)), // Sun, 2025-W52
                ("2025-12-22T05:00:00Z", Remove),       // Mon, 2025-W52
            ],
        },
        Case {
            name: "a period kept by keep-last does not count for keep-daily",
            policy: KeepPolicy {
                last: 1,
                hourly: 0,
                daily: 1,
                weekly: 0,
                monthly: 0,
                yearly: 0,
            },
            table: &[
                ("2026-03-10T20:00:00Z", Keep(Last)),
                ("2026-03-10T08:00:00Z", Remove),
                ("2026-03-09T08:00:00Z", Keep(Daily)),
                ("2026-03-08T08:00:00Z", Remove),
            ],
        },
        Case {
            name: "all rules: each one reaches back past what the earlier ones kept",
            policy: KeepPolicy {
                last: 2,
                hourly: 0,
                daily: 2,
                weekly: 2,
                monthly: 2,
                yearly: 2,
            },
            table: &[
                ("2026-03-02T05:00:00Z", Keep(Last)),    // Mon, W10
                ("2026-03-01T05:00:00Z", Keep(Last)),    // Sun, W09
                ("2026-02-28T05:00:00Z", Keep(Daily)),   // W09
                ("2026-02-27T05:00:00Z", Keep(Daily)),   // W09
                ("2026-02-20T05:00:00Z", Keep(Weekly)),  // W08
                ("2026-02-13T05:00:00Z", Keep(Weekly)),  // W07
                ("2026-01-30T05:00:00Z", Keep(Monthly)), // 2026-01
                ("2026-01-02T05:00:00Z", Remove),        // 2026-01 again
                ("2025-12-31T05:00:00Z", Keep(Monthly)), // 2025-12
                ("2025-12-15T05:00:00Z", Remove),        // 2025-12 again
                ("2025-06-15T05:00:00Z", Remove),        // 2025 already kept (12-31)
                ("2024-12-31T05:00:00Z", Keep(Yearly)),  // 2024
            ],
        },
    ];

    #[test]
    fn policy_table() {
        for case in CASES {
            // Feed the backups oldest first, to show input order does not matter.
            let times: Vec<_> = case.table.iter().rev().map(|(s, _)| t(s)).collect();
            let got = plan(&times, &case.policy);
            let expected: Vec<_> = case.table.iter().rev().map(|(_, m)| *m).collect();
            for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
                assert_eq!(g, e, "{}: backup {}", case.name, times[i]);
            }
        }
    }
}
