//! Operator time windows: "Mon-Fri 09:00-18:00 min 10" raises a pool's
//! `min_ready` to 10 while the window is open.
//!
//! Windows are read in UTC, or at a fixed offset given per window
//! (`UTC+02:00`): a fixed offset never moves under daylight-saving changes,
//! so what the operator wrote is what happens. A window whose end is before
//! its start runs over midnight ("Fri 22:00-06:00" is open from Friday 22:00
//! to Saturday 06:00). Several open windows: the highest `min` wins.
//!
//! The strings are parsed here (`FromStr`), so the config file, the store and
//! a CLI read them alike; reading TOML stays in the server.
//!
//! [`WallClock`] is where "now" comes from: the system clock, or for tests
//! and replays on the paused clock a wall-clock anchor plus tokio's elapsed
//! time, so they decide what time it is.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

const DAY_NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const MINUTES_PER_DAY: u16 = 24 * 60;

/// A window string that does not parse; the message says what was expected.
/// The text is quoted only in part when long: the server cuts status
/// messages at 1024 bytes, and a huge token quoted whole would cut off the
/// reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("{} is not a day or day range (Mon-Fri, Sat,Sun, daily)", quoted(.0))]
    Days(String),
    #[error("{} is not a time of day (HH:MM, 00:00 to 24:00)", quoted(.0))]
    Time(String),
    #[error("{} is not a UTC offset (UTC, UTC+02:00, -05:30; from -14:00 to +14:00)", quoted(.0))]
    Offset(String),
    #[error("{} is not a day, nor a UTC offset: time zones are not read by name; write a fixed UTC offset, like UTC+01:00 (it does not follow daylight-saving changes)", quoted(.0))]
    TimeZone(String),
    #[error("window {}: {1}", quoted(.0))]
    Window(String, String),
}

/// The characters of a window or token an error quotes.
const QUOTED_CHARS: usize = 64;

/// `text` in quotes, or its first [`QUOTED_CHARS`] characters and its length.
fn quoted(text: &str) -> String {
    if text.chars().count() <= QUOTED_CHARS {
        format!("{text:?}")
    } else {
        let head: String = text.chars().take(QUOTED_CHARS).collect();
        format!("{head:?}... ({} bytes)", text.len())
    }
}

/// Days of the week, Monday first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Days(u8);

impl Days {
    pub const ALL: Days = Days(0x7f);

    /// Monday is 0.
    pub fn contains(self, weekday: u8) -> bool {
        weekday < 7 && self.0 & (1 << weekday) != 0
    }
}

fn day_index(name: &str) -> Option<u8> {
    let lower = name.trim().to_ascii_lowercase();
    if lower.len() < 3 {
        return None;
    }
    const FULL: [&str; 7] = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    FULL.iter()
        .position(|full| full.starts_with(&lower))
        .map(|i| i as u8)
}

impl FromStr for Days {
    type Err = ScheduleError;

    /// `Mon-Fri`, `Sat,Sun`, `Mon-Wed,Fri`, `Fri-Mon` (wraps), `daily`, `*`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ScheduleError::Days(s.to_string());
        let t = s.trim();
        if matches!(
            t.to_ascii_lowercase().as_str(),
            "*" | "daily" | "every day" | "all"
        ) {
            return Ok(Self::ALL);
        }
        let mut mask = 0u8;
        for part in t.split(',') {
            let part = part.trim();
            match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (day_index(a).ok_or_else(err)?, day_index(b).ok_or_else(err)?);
                    let mut d = a;
                    loop {
                        mask |= 1 << d;
                        if d == b {
                            break;
                        }
                        d = (d + 1) % 7;
                    }
                }
                None => mask |= 1 << day_index(part).ok_or_else(err)?,
            }
        }
        Ok(Self(mask))
    }
}

impl fmt::Display for Days {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Self::ALL {
            return f.write_str("daily");
        }
        // Runs of consecutive days as ranges: Mon-Fri, Sat,Sun -> "Sat-Sun".
        let mut parts = Vec::new();
        let mut d = 0u8;
        while d < 7 {
            if self.contains(d) {
                let start = d;
                while d + 1 < 7 && self.contains(d + 1) {
                    d += 1;
                }
                parts.push(if start == d {
                    DAY_NAMES[usize::from(d)].to_string()
                } else {
                    format!(
                        "{}-{}",
                        DAY_NAMES[usize::from(start)],
                        DAY_NAMES[usize::from(d)]
                    )
                });
            }
            d += 1;
        }
        f.write_str(&parts.join(","))
    }
}

/// A time of day in minutes, 00:00 to 24:00 (24:00 only ends a window).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeOfDay(u16);

impl TimeOfDay {
    pub fn minutes(self) -> u16 {
        self.0
    }
}

impl FromStr for TimeOfDay {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ScheduleError::Time(s.to_string());
        let (h, m) = s.trim().split_once(':').ok_or_else(err)?;
        // Digits only: `parse` alone would take "+5" as 5.
        let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
        if h.is_empty() || h.len() > 2 || m.len() != 2 || !digits(h) || !digits(m) {
            return Err(err());
        }
        let h: u16 = h.parse().map_err(|_| err())?;
        let m: u16 = m.parse().map_err(|_| err())?;
        if m >= 60 || h * 60 + m > MINUTES_PER_DAY {
            return Err(err());
        }
        Ok(Self(h * 60 + m))
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

/// Whether `token`, which is no day nor offset, names a time zone
/// ("Europe/Berlin", "CET", "GMT+1", a POSIX "EST5EDT" or "CET-1CEST",
/// "local"): windows take fixed offsets only, and saying so helps more
/// than "not a day".
fn names_a_time_zone(token: &str) -> bool {
    // POSIX TZ: a name of three letters or more, then the offset's hours.
    // Letters are ASCII: `letters` falls on a character boundary.
    let letters = token.bytes().take_while(u8::is_ascii_alphabetic).count();
    let hours = &token[letters..];
    let hours = hours.strip_prefix(['+', '-']).unwrap_or(hours);
    let posix = letters >= 3 && hours.starts_with(|c: char| c.is_ascii_digit());
    token.contains('/')
        || token
            .get(..3)
            .is_some_and(|p| p.eq_ignore_ascii_case("GMT"))
        || ((2..=5).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_uppercase()))
        || posix
        || token.eq_ignore_ascii_case("local")
        || token.eq_ignore_ascii_case("localtime")
}

/// A fixed offset from UTC, in minutes (east positive).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct UtcOffset(i16);

impl UtcOffset {
    pub const UTC: UtcOffset = UtcOffset(0);

    pub fn minutes(self) -> i16 {
        self.0
    }
}

impl FromStr for UtcOffset {
    type Err = ScheduleError;

    /// `UTC`, `Z`, `+02:00`, `-05:30`, `UTC+2`, `+0200`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ScheduleError::Offset(s.to_string());
        let t = s.trim();
        let rest = match t.get(..3) {
            Some(utc) if utc.eq_ignore_ascii_case("UTC") => &t[3..],
            _ => t,
        };
        if rest.is_empty() || rest.eq_ignore_ascii_case("Z") {
            return Ok(Self::UTC);
        }
        let (sign, digits) = match rest.as_bytes()[0] {
            b'+' => (1i16, &rest[1..]),
            b'-' => (-1i16, &rest[1..]),
            _ if names_a_time_zone(t) => return Err(ScheduleError::TimeZone(s.to_string())),
            _ => return Err(err()),
        };
        // Checked before splitting by byte position, which would panic inside
        // a multi-byte character ("+1é1"), and so `parse` never sees a sign.
        if !digits.bytes().all(|b| b.is_ascii_digit() || b == b':') {
            return Err(err());
        }
        // As in times of day: hours of one or two digits, minutes of two
        // ("+5:3" is not read as +05:03, nor as +05:30).
        let (h, m) = match digits.split_once(':') {
            Some((h, m)) if m.len() == 2 => (h, m),
            Some(_) => return Err(err()),
            None if digits.len() == 4 => digits.split_at(2),
            None => (digits, "00"),
        };
        if h.is_empty() || h.len() > 2 {
            return Err(err());
        }
        let h: i16 = h.parse().map_err(|_| err())?;
        let m: i16 = m.parse().map_err(|_| err())?;
        if !(0..=14).contains(&h) || !(0..60).contains(&m) || h * 60 + m > 14 * 60 {
            return Err(err());
        }
        Ok(Self(sign * (h * 60 + m)))
    }
}

impl fmt::Display for UtcOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("UTC");
        }
        let sign = if self.0 < 0 { '-' } else { '+' };
        let m = self.0.unsigned_abs();
        write!(f, "UTC{sign}{:02}:{:02}", m / 60, m % 60)
    }
}

/// One operator window: on `days`, from `from` to `to` (local to `utc_offset`),
/// the pool keeps at least `min` instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Window {
    pub days: Days,
    pub from: TimeOfDay,
    pub to: TimeOfDay,
    pub min: u32,
    pub utc_offset: UtcOffset,
}

/// The local weekday (Monday 0) and minute of day of `at` at `offset`.
fn local(at: SystemTime, offset: UtcOffset) -> (u8, u16) {
    let secs = match at.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    } + i64::from(offset.minutes()) * 60;
    let days = secs.div_euclid(86_400);
    let minute = (secs.rem_euclid(86_400) / 60) as u16;
    (weekday(days), minute)
}

/// The weekday (Monday 0) of day `days` since 1970-01-01, a Thursday.
fn weekday(days: i64) -> u8 {
    (days + 3).rem_euclid(7) as u8
}

/// Whole seconds since the epoch at or before `at`.
fn unix_secs(at: SystemTime) -> i64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            let d = e.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            secs.saturating_neg()
                .saturating_sub(i64::from(d.subsec_nanos() > 0))
        }
    }
}

/// The instant `secs` after (before, if negative) the epoch.
fn from_unix_secs(secs: i64) -> Option<SystemTime> {
    let d = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        UNIX_EPOCH.checked_add(d)
    } else {
        UNIX_EPOCH.checked_sub(d)
    }
}

impl Window {
    /// Whether the window is open at `at`.
    pub fn is_open(&self, at: SystemTime) -> bool {
        let (day, minute) = local(at, self.utc_offset);
        let (from, to) = (self.from.minutes(), self.to.minutes());
        if from < to {
            self.days.contains(day) && (from..to).contains(&minute)
        } else {
            // Over midnight: the evening of a listed day, the morning after it.
            (self.days.contains(day) && minute >= from)
                || (self.days.contains((day + 6) % 7) && minute < to)
        }
    }

    /// The instants (unix seconds) at which the window opens or closes on
    /// the listed days from the local day before `around` to a week after
    /// it: every change within a week of `around` is among them.
    fn edges(&self, around: i64) -> impl Iterator<Item = i64> + '_ {
        let offset = i64::from(self.utc_offset.minutes()) * 60;
        let day = around.saturating_add(offset).div_euclid(86_400);
        let from = i64::from(self.from.minutes()) * 60;
        // Over midnight, the window closes the day after it opened.
        let to = i64::from(self.to.minutes()) * 60 + if self.from < self.to { 0 } else { 86_400 };
        (day.saturating_sub(1)..=day.saturating_add(7))
            .filter(|d| self.days.contains(weekday(*d)))
            .flat_map(move |d| {
                let midnight = d.saturating_mul(86_400).saturating_sub(offset);
                [midnight.saturating_add(from), midnight.saturating_add(to)]
            })
    }

    fn check(self, text: &str) -> Result<Self, ScheduleError> {
        if self.from == self.to {
            return Err(ScheduleError::Window(
                text.to_string(),
                "from and to are equal: the window is empty (00:00-24:00 is a whole day)".into(),
            ));
        }
        if self.from.minutes() == MINUTES_PER_DAY {
            return Err(ScheduleError::Window(
                text.to_string(),
                "24:00 can only end a window".into(),
            ));
        }
        if self.days.0 == 0 {
            return Err(ScheduleError::Window(text.to_string(), "no days".into()));
        }
        Ok(self)
    }

    /// Builds a window from its parts as a config file spells them.
    pub fn from_parts(
        days: &str,
        from: &str,
        to: &str,
        min: u32,
        utc_offset: Option<&str>,
    ) -> Result<Self, ScheduleError> {
        let window = Window {
            days: days.parse()?,
            from: from.parse()?,
            to: to.parse()?,
            min,
            utc_offset: utc_offset.map(str::parse).transpose()?.unwrap_or_default(),
        };
        window.check(&format!("{days} {from}-{to} min {min}"))
    }
}

impl FromStr for Window {
    type Err = ScheduleError;

    /// `Mon-Fri 09:00-18:00 min 10`, optionally followed by an offset
    /// (`UTC+02:00`); the day and time parts may come in either order.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| ScheduleError::Window(s.to_string(), why.to_string());
        let mut days = None;
        let mut times = None;
        let mut min = None;
        let mut offset = None;
        // A part given twice is refused, not overwritten: "Sat Sun ..." or
        // two time ranges would otherwise keep the last alone, a window
        // narrower than the operator wrote.
        let once = |part: &str| {
            bad(&format!(
                "{part} given twice; write one window per line (days may be listed: Sat,Sun)"
            ))
        };
        // "Mon - Fri", "Mon -Fri", "Mon- Fri": a range split by spaces
        // would otherwise read as a UTC offset "-" or a day "Mon-"; a list
        // "Sat, Sun" as a day "Sat,".
        let spaced =
            || bad("ranges and lists are written without spaces (Mon-Fri, Sat,Sun, 09:00-18:00)");
        let mut tokens = s.split_whitespace();
        while let Some(token) = tokens.next() {
            if token == "-"
                || token.ends_with(['-', ','])
                || token.starts_with(',')
                || token
                    .strip_prefix('-')
                    .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_alphabetic()))
            {
                return Err(spaced());
            }
            if token.eq_ignore_ascii_case("min") {
                let needs = || {
                    bad(&format!(
                        "min needs a whole number of instances, 0 to {}",
                        u32::MAX
                    ))
                };
                let n = tokens.next().ok_or_else(needs)?;
                let n = n.parse::<u32>().map_err(|_| needs())?;
                if min.replace(n).is_some() {
                    return Err(once("min"));
                }
            } else if token.bytes().all(|b| b.is_ascii_digit()) {
                // "Mon-Fri 09:00-18:00 10": a floor without its keyword,
                // which would read as a time range missing its end.
                let floor = if token.len() <= QUOTED_CHARS {
                    token
                } else {
                    "N"
                };
                return Err(bad(&format!(
                    "{} alone: write the floor as \"min {floor}\"",
                    quoted(token)
                )));
            } else if token.starts_with(|c: char| c.is_ascii_digit()) {
                let (from, to) = token
                    .split_once('-')
                    .ok_or_else(|| bad("times are written 09:00-18:00"))?;
                if times.replace((from.parse()?, to.parse()?)).is_some() {
                    return Err(once("the times"));
                }
            } else if token.to_ascii_uppercase().starts_with("UTC")
                || token.starts_with(['+', '-'])
                || token.eq_ignore_ascii_case("Z")
            {
                if offset.replace(token.parse()?).is_some() {
                    return Err(once("the UTC offset"));
                }
            } else {
                let parsed = token.parse().map_err(|e| match e {
                    ScheduleError::Days(_) if names_a_time_zone(token) => {
                        ScheduleError::TimeZone(token.to_string())
                    }
                    e => e,
                })?;
                if days.replace(parsed).is_some() {
                    return Err(once("the days"));
                }
            }
        }
        let (from, to) = times.ok_or_else(|| bad("missing the times (09:00-18:00)"))?;
        Window {
            days: days.unwrap_or(Days::ALL),
            from,
            to,
            min: min.ok_or_else(|| bad("missing \"min N\""))?,
            utc_offset: offset.unwrap_or_default(),
        }
        .check(s)
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}-{} min {}",
            self.days, self.from, self.to, self.min
        )?;
        if self.utc_offset != UtcOffset::UTC {
            write!(f, " {}", self.utc_offset)?;
        }
        Ok(())
    }
}

/// Stored as the one-line form (`"Mon-Fri 09:00-18:00 min 10"`).
impl Serialize for Window {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Read from the one-line form, or from a table
/// `{ days = "Mon-Fri", from = "09:00", to = "18:00", min = 10, utc_offset = "+02:00" }`.
impl<'de> Deserialize<'de> for Window {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Parts {
            #[serde(default)]
            days: Option<String>,
            #[serde(deserialize_with = "time_from")]
            from: String,
            #[serde(deserialize_with = "time_to")]
            to: String,
            min: u32,
            #[serde(default)]
            utc_offset: Option<String>,
        }
        // A visitor, not an untagged enum: that tries each form and drops
        // their errors, so a table's unknown or missing key got only the
        // two forms' description.
        struct Either;
        impl<'de> serde::de::Visitor<'de> for Either {
            type Value = Window;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a window: \"Mon-Fri 09:00-18:00 min 10\" or { days = \"Mon-Fri\", from = \"09:00\", to = \"18:00\", min = 10 } (utc_offset optional)",
                )
            }
            fn visit_str<E: serde::de::Error>(self, line: &str) -> Result<Window, E> {
                line.parse().map_err(E::custom)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Window, A::Error> {
                let p = Parts::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Window::from_parts(
                    p.days.as_deref().unwrap_or("daily"),
                    &p.from,
                    &p.to,
                    p.min,
                    p.utc_offset.as_deref(),
                )
                .map_err(serde::de::Error::custom)
            }
        }
        deserializer.deserialize_any(Either)
    }
}

/// A window table's `from` (or `to`): a quoted string. TOML reads an
/// unquoted time (`from = 09:00:00`) as a time value, which serde sees as
/// a map, and "invalid type: map, expected a string" named neither the key
/// nor the quotes it lacks.
fn time_text<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
    key: &'static str,
    example: &'static str,
) -> Result<String, D::Error> {
    struct Text {
        key: &'static str,
        example: &'static str,
    }
    impl<'de> serde::de::Visitor<'de> for Text {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(
                f,
                "a time of day as a quoted string, {} = \"{}\"",
                self.key, self.example
            )
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<String, E> {
            Ok(text.to_string())
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<String, A::Error> {
            let Text { key, example } = self;
            Err(serde::de::Error::custom(format!(
                "{key}: a time of day is a quoted string, {key} = \"{example}\" (unquoted, TOML reads 09:00:00 as a time value)"
            )))
        }
    }
    deserializer.deserialize_any(Text { key, example })
}

fn time_from<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    time_text(deserializer, "from", "09:00")
}

fn time_to<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    time_text(deserializer, "to", "18:00")
}

/// The highest `min` of the windows open at `at`, if any is open.
pub fn scheduled_min(windows: &[Window], at: SystemTime) -> Option<u32> {
    windows
        .iter()
        .filter(|w| w.is_open(at))
        .map(|w| w.min)
        .max()
}

/// The first instant after `after` at which [`scheduled_min`] changes (a
/// window opens or closes), if it ever does: windows repeat weekly, so any
/// change comes within a week.
pub fn next_change(windows: &[Window], after: SystemTime) -> Option<SystemTime> {
    let now = unix_secs(after);
    let mut edges: Vec<i64> = windows
        .iter()
        .flat_map(|w| w.edges(now))
        // Edges fall on whole seconds, `now` is `after`'s, rounded down.
        .filter(|edge| *edge > now)
        .collect();
    edges.sort_unstable();
    edges.dedup();
    // Windows edge to edge ("Mon 00:00-24:00" and "Tue 00:00-24:00"), or
    // one inside another with the lower min, change nothing there.
    edges.into_iter().filter_map(from_unix_secs).find(|edge| {
        let before = edge
            .checked_sub(Duration::from_secs(1))
            .map(|t| scheduled_min(windows, t));
        before != Some(scheduled_min(windows, *edge))
    })
}

/// The highest `min` of the windows open at any instant from `from` to
/// `until` (both included), if any is open then: the floor in force now,
/// and at each change ([`next_change`]) up to `until`.
pub fn highest_min_within(windows: &[Window], from: SystemTime, until: SystemTime) -> Option<u32> {
    let mut highest = scheduled_min(windows, from);
    let mut at = from;
    // From change to change, not minute by minute: a few turns per window
    // whose edges fall within the span.
    while let Some(edge) = next_change(windows, at).filter(|edge| *edge <= until) {
        highest = highest.max(scheduled_min(windows, edge));
        at = edge;
    }
    highest
}

/// Where wall-clock time comes from.
#[derive(Clone, Copy, Debug)]
pub enum WallClock {
    /// The system clock, read at each use: a clock that chrony steps after
    /// start is followed.
    System,
    /// An anchor plus tokio's elapsed time: on the paused clock of tests and
    /// replays, simulated time moves the wall clock too.
    Simulated { wall: SystemTime, tokio: Instant },
}

impl WallClock {
    /// The system clock, or a simulated one that reads `start` now.
    pub fn new(start: Option<SystemTime>) -> Self {
        match start {
            None => Self::System,
            Some(wall) => Self::Simulated {
                wall,
                tokio: Instant::now(),
            },
        }
    }

    pub fn now(&self) -> SystemTime {
        match self {
            Self::System => SystemTime::now(),
            Self::Simulated { wall, tokio } => *wall + tokio.elapsed(),
        }
    }
}

/// `UNIX_EPOCH + secs`, for tests and replays that name a wall-clock time.
pub fn unix(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The server cuts status messages at 1024 bytes: an error that quoted
    /// a huge window or token whole would lose its reason.
    #[test]
    fn an_over_long_window_keeps_its_reason_in_a_short_message() {
        let junk = "x".repeat(1500);
        for window in [
            format!("daily 00:00-01:00 min 1 {junk}"),
            format!("{junk} 00:00-01:00 min 1"),
            format!("daily 00:00-01:00 min {junk}"),
            format!("daily 00:00-01:00 {}", "1".repeat(1500)),
            format!("daily 00:00-01:00 min 1 UTC+{junk}"),
        ] {
            let message = window.parse::<Window>().unwrap_err().to_string();
            assert!(message.len() < 400, "{} bytes: {message}", message.len());
            let reasons = ["is not", "needs", "alone"];
            assert!(reasons.iter().any(|r| message.contains(r)), "{message}");
        }
    }
    use proptest::prelude::*;

    /// Without a start given, the wall clock is the system's, read at each
    /// use: monotonic time that runs apart from it (here tokio's paused
    /// clock moved an hour; in production, chrony stepping the clock after
    /// start) does not carry operator windows and ages along.
    #[tokio::test(start_paused = true)]
    async fn the_system_wall_clock_is_read_not_extrapolated() {
        let clock = WallClock::new(None);
        tokio::time::advance(Duration::from_secs(3600)).await;
        let drift = clock
            .now()
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        assert!(drift < Duration::from_secs(60), "{drift:?} ahead");

        let start = unix(1_700_000_000);
        let simulated = WallClock::new(Some(start));
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(simulated.now(), start + Duration::from_secs(90));
    }

    #[test]
    fn a_min_too_large_says_what_a_min_may_be() {
        let err = "daily 09:00-18:00 min 99999999999"
            .parse::<Window>()
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("min needs a whole number of instances, 0 to 4294967295"),
            "{err}"
        );
    }

    #[test]
    fn offsets_with_anything_but_digits_are_refused() {
        for bad in [
            "+1é1", "+é", "-12é", "UTC+1é1", "+1:é", "++5", "+-5", "+0x1", "+1.5",
        ] {
            assert_eq!(
                bad.parse::<UtcOffset>(),
                Err(ScheduleError::Offset(bad.to_string())),
                "{bad}"
            );
        }
        let err = "daily 09:00-18:00 min 1 +1é1"
            .parse::<Window>()
            .unwrap_err();
        assert!(err.to_string().contains("not a UTC offset"), "{err}");
        // Out of range: the message says the range.
        let err = "+15:00".parse::<UtcOffset>().unwrap_err();
        assert!(err.to_string().contains("from -14:00 to +14:00"), "{err}");
        assert!("+14:59".parse::<UtcOffset>().is_err());
        assert!("-14:01".parse::<UtcOffset>().is_err());
        assert!("+999:00".parse::<UtcOffset>().is_err());
        assert_eq!("-14:00".parse::<UtcOffset>().unwrap().minutes(), -840);
        // A time of day is digits only: parse() alone takes a sign.
        for bad in ["09:+5", "+9:05", "-0:30", "9:5 "] {
            assert!(bad.parse::<TimeOfDay>().is_err(), "{bad}");
        }
        assert_eq!("9:05".parse::<TimeOfDay>().unwrap().minutes(), 545);
        assert_eq!("+0130".parse::<UtcOffset>().unwrap().minutes(), 90);
        assert_eq!("-5".parse::<UtcOffset>().unwrap().minutes(), -300);
    }

    /// A window table's own errors are kept: an unknown key is named with
    /// the keys a table takes, a missing one by its name; only a value
    /// that is neither a string nor a table gets the two forms.
    #[test]
    fn a_window_table_names_its_unknown_and_missing_keys() {
        let read = |json: &str| serde_json::from_str::<Window>(json).map_err(|e| e.to_string());
        let err = read(r#"{"days": "Mon", "from": "09:00", "to": "10:00", "min": 2, "tz": "x"}"#)
            .unwrap_err();
        assert!(
            err.contains(
                "unknown field `tz`, expected one of `days`, `from`, `to`, `min`, `utc_offset`"
            ),
            "{err}"
        );
        let err = read(r#"{"days": "Mon", "from": "09:00", "to": "10:00"}"#).unwrap_err();
        assert!(err.contains("missing field `min`"), "{err}");
        let err = read("5").unwrap_err();
        assert!(
            err.contains("integer `5`, expected a window: \"Mon-Fri 09:00-18:00 min 10\" or {"),
            "{err}"
        );
        let err = read(r#""Mon 9am-10:00 min 2""#).unwrap_err();
        assert!(err.contains("9am"), "{err}");
        let line = "Mon 09:00-10:00 min 2".parse::<Window>().unwrap();
        assert_eq!(read(r#""Mon 09:00-10:00 min 2""#), Ok(line));
        assert_eq!(
            read(r#"{"days": "Mon", "from": "09:00", "to": "10:00", "min": 2}"#),
            Ok(line)
        );
    }

    /// Each mistake's message names the part that is wrong and what to
    /// write, not a neighbouring part: a bare number is a floor without
    /// `min`, a day list with spaces is spaced like a range, a POSIX or
    /// "local" zone is a time zone, and an unquoted TOML time (a
    /// datetime, which reaches serde as a map) is a time to quote.
    #[test]
    fn window_mistakes_name_the_part_that_is_wrong() {
        let table = |json: &str| serde_json::from_str::<Window>(json).map_err(|e| e.to_string());
        let line = |text: &str| text.parse::<Window>().map_err(|e| e.to_string());
        // What toml hands serde for `from = 09:00:00`.
        let toml_time = r#"{"$__toml_private_datetime": "09:00:00"}"#;
        let wrong = [
            (
                "missing min",
                line("Mon-Fri 09:00-18:00 10"),
                "\"10\" alone: write the floor as \"min 10\"",
            ),
            (
                "missing min, first",
                line("10 Mon-Fri 09:00-18:00"),
                "write the floor as \"min 10\"",
            ),
            (
                "a day list with a space",
                line("Sat, Sun 10:00-16:00 min 5"),
                "written without spaces (Mon-Fri, Sat,Sun",
            ),
            (
                "a day list with a space before the comma",
                line("Sat ,Sun 10:00-16:00 min 5"),
                "written without spaces (Mon-Fri, Sat,Sun",
            ),
            (
                "a POSIX zone",
                line("Mon-Fri 09:00-18:00 min 10 EST5EDT"),
                "\"EST5EDT\" is not a day, nor a UTC offset: time zones are not read by name",
            ),
            (
                "a POSIX zone with a sign",
                line("Mon-Fri 09:00-18:00 min 10 CET-1CEST"),
                "time zones are not read by name",
            ),
            (
                "the local zone",
                line("Mon-Fri 09:00-18:00 min 10 local"),
                "time zones are not read by name",
            ),
            (
                "a POSIX zone as a table's offset",
                table(r#"{"from": "09:00", "to": "18:00", "min": 1, "utc_offset": "EST5EDT"}"#),
                "time zones are not read by name",
            ),
            (
                "an unquoted TOML time",
                table(&format!(
                    r#"{{"from": {toml_time}, "to": "18:00", "min": 1}}"#
                )),
                "from: a time of day is a quoted string, from = \"09:00\"",
            ),
            (
                "an unquoted TOML time, to",
                table(&format!(
                    r#"{{"from": "09:00", "to": {toml_time}, "min": 1}}"#
                )),
                "to: a time of day is a quoted string, to = \"18:00\"",
            ),
            (
                "a number for a time",
                table(r#"{"from": 9, "to": "18:00", "min": 1}"#),
                "expected a time of day as a quoted string, from = \"09:00\"",
            ),
            // What was right before stays so.
            (
                "a misspelt day",
                line("Mon-Fry 09:00-18:00 min 1"),
                "\"Mon-Fry\" is not a day or day range",
            ),
            ("a bad time", line("Mon 9-18 min 1"), "HH:MM"),
        ]
        .into_iter()
        .filter_map(|(what, got, expect)| match got {
            Err(err) if err.contains(expect) => None,
            other => Some(format!("{what}: {other:?}")),
        })
        .collect::<Vec<_>>();
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    proptest! {
        /// Windows come from the API, config files and the CLI: no string
        /// may panic the parser.
        #[test]
        fn no_string_panics_the_window_parser(text in "\\PC{0,40}") {
            let _ = text.parse::<Window>();
            let _ = text.parse::<UtcOffset>();
            let _ = text.parse::<TimeOfDay>();
            let _ = text.parse::<Days>();
        }

        #[test]
        fn no_offset_panics_a_window(
            offset in "(UTC|utc)?[+-][0-9:é€]{0,4}|[+-]?[0-9:éß€a-z+-]{0,6}",
        ) {
            round_trips(&format!("daily 09:00-18:00 min 1 {offset}"))?;
        }

        #[test]
        fn no_day_or_time_token_panics_a_window(
            days in "daily|Mon-Fri|[A-Za-zé,-]{0,8}",
            from in "[01][0-9]:[0-5][0-9]|[0-9:é€+-]{0,6}",
            to in "[01][0-9]:[0-5][0-9]|[0-9:é€+-]{0,6}",
        ) {
            round_trips(&format!("{days} {from}-{to} min 1"))?;
        }
    }

    /// What parses prints as something that parses to the same window.
    fn round_trips(line: &str) -> Result<(), TestCaseError> {
        if let Ok(window) = line.parse::<Window>() {
            prop_assert_eq!(window.to_string().parse::<Window>(), Ok(window));
        }
        Ok(())
    }
}
