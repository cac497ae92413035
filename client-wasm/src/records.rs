//! Class records as the page shows them, free of any browser API: lengths and sizes as
//! people read them, and the order of the live register's rows (the teacher sorts it by
//! any column). The browser side (`web::records`) owns the DOM.

use quad_shared::protocol::ReportRow;

/// A length as `m:ss`, or `h:mm:ss` from an hour.
pub fn duration_text(ms: u64) -> String {
    let s = ms / 1000;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// A size in kB or MB (to a tenth, rounded; integers only: float formatting would add
/// to every visitor's download).
pub fn size_text(bytes: u64) -> String {
    if bytes >= 1_000_000 {
        let tenths = (bytes + 50_000) / 100_000;
        format!("{}.{} MB", tenths / 10, tenths % 10)
    } else {
        format!("{} kB", bytes.div_ceil(1000))
    }
}

/// A column of the register the teacher can sort by (`data-sort` on its header button).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Column {
    #[default]
    Name,
    Present,
    Talk,
    Hands,
    Chat,
    Away,
}

impl Column {
    pub const ALL: [Column; 6] = [
        Column::Name,
        Column::Present,
        Column::Talk,
        Column::Hands,
        Column::Chat,
        Column::Away,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Column::Name => "name",
            Column::Present => "present",
            Column::Talk => "talk",
            Column::Hands => "hands",
            Column::Chat => "chat",
            Column::Away => "away",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Column::Name => "Name",
            Column::Present => "In the room",
            Column::Talk => "Spoke",
            Column::Hands => "Hands",
            Column::Chat => "Chat lines",
            Column::Away => "Not watching",
        }
    }

    pub fn from_key(key: &str) -> Option<Column> {
        Column::ALL.into_iter().find(|c| c.key() == key)
    }

    /// The cell of `row` in this column, as shown.
    pub fn cell(self, row: &ReportRow) -> String {
        match self {
            Column::Name => row.name.clone(),
            Column::Present => {
                let mut t = duration_text(row.present_ms);
                if row.intervals > 1 {
                    t.push_str(&format!(" ({}×)", row.intervals));
                }
                if !row.present {
                    t.push_str(", left");
                }
                t
            }
            Column::Talk => duration_text(row.talk_ms),
            Column::Hands => row.hands.to_string(),
            Column::Chat => row.chat_lines.to_string(),
            Column::Away => {
                if row.away_count == 0 {
                    "—".to_owned()
                } else {
                    format!("{}× {}", row.away_count, duration_text(row.away_ms))
                }
            }
        }
    }
}

/// How the register is sorted: by a column, up or down (a second click on the same column
/// turns it round).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sort {
    pub by: Column,
    pub descending: bool,
}

impl Sort {
    /// The sort after a click on `column`'s header: numbers start with the largest.
    pub fn clicked(self, column: Column) -> Sort {
        if column == self.by {
            Sort {
                by: column,
                descending: !self.descending,
            }
        } else {
            Sort {
                by: column,
                descending: column != Column::Name,
            }
        }
    }

    /// Sorts `rows` (names break ties, so the order is stable as numbers change).
    pub fn apply(self, rows: &mut [ReportRow]) {
        rows.sort_by(|a, b| {
            let by = match self.by {
                Column::Name => std::cmp::Ordering::Equal,
                Column::Present => a.present_ms.cmp(&b.present_ms),
                Column::Talk => a.talk_ms.cmp(&b.talk_ms),
                Column::Hands => a.hands.cmp(&b.hands),
                Column::Chat => a.chat_lines.cmp(&b.chat_lines),
                Column::Away => a.away_ms.cmp(&b.away_ms),
            };
            let by = if self.descending { by.reverse() } else { by };
            let names = a
                .name
                .to_ascii_lowercase()
                .cmp(&b.name.to_ascii_lowercase());
            let names = if self.descending && self.by == Column::Name {
                names.reverse()
            } else {
                names
            };
            by.then(names)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quad_shared::protocol::Role;

    fn row(name: &str, talk_ms: u64, hands: u32) -> ReportRow {
        ReportRow {
            name: name.into(),
            role: Role::Guest,
            present: true,
            intervals: 1,
            present_ms: 60_000,
            talk_ms,
            hands,
            chat_lines: 0,
            away_count: 0,
            away_ms: 0,
        }
    }

    #[test]
    fn lengths_and_sizes_read_as_people_say_them() {
        assert_eq!(duration_text(65_400), "1:05");
        assert_eq!(duration_text(3_723_000), "1:02:03");
        assert_eq!(size_text(1_234), "2 kB");
        assert_eq!(size_text(3_450_000), "3.5 MB");
    }

    #[test]
    fn the_register_sorts_by_any_column_and_turns_round() {
        let mut rows = vec![
            row("bo", 1_000, 2),
            row("Ada", 5_000, 0),
            row("cy", 1_000, 1),
        ];
        let sort = Sort::default().clicked(Column::Talk);
        assert!(sort.descending);
        sort.apply(&mut rows);
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["Ada", "bo", "cy"]);
        sort.clicked(Column::Talk).apply(&mut rows);
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["bo", "cy", "Ada"]);
        Sort::default().apply(&mut rows);
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["Ada", "bo", "cy"]);
        assert_eq!(Column::from_key("hands"), Some(Column::Hands));
        let mut r = row("x", 0, 0);
        r.intervals = 2;
        r.present = false;
        assert_eq!(Column::Present.cell(&r), "1:00 (2×), left");
    }
}
