//! Timestamps in events and read models, written as chrono writes them
//! (RFC 3339, UTC as `Z`, the fraction in 0, 3, 6 or 9 digits, whichever
//! is exact) and read as chrono reads them, without going through `fmt`
//! and chrono's general parser: chrono's `Serialize` formats through
//! `Display` and serde_json's `collect_str`, which escapes each character
//! as it comes. A consumed message's six timestamps took about 6% of the
//! instructions it cost the node, and these short paths cut its total by
//! 4.5% (`bench/profile/callgrind.sh`, RabbitMQ). What the
//! short paths do not cover (years outside 0..=9999, leap seconds, other
//! spellings of RFC 3339 on reading) is left to chrono.
//!
//! Use with `#[serde(with = "crate::timestamp")]`, or
//! `crate::timestamp::option` for an `Option`.

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, Timelike, Utc};
use serde::{de, Deserializer, Serialize, Serializer};
use std::fmt;

/// The longest this writes: `9999-12-31T23:59:59.999999999Z`.
const LONGEST: usize = 30;

pub fn serialize<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    let mut buffer = [0u8; LONGEST];
    match write(at, &mut buffer) {
        Some(text) => serializer.serialize_str(text),
        // Years outside 0..=9999 and leap seconds: rare, left to chrono.
        None => at.serialize(serializer),
    }
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
    deserializer.deserialize_str(Rfc3339)
}

pub mod option {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &Option<DateTime<Utc>>, serializer: S) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => super::serialize(at, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        Ok(Option::<Read>::deserialize(deserializer)?.map(|read| read.0))
    }

    struct Read(DateTime<Utc>);

    impl<'de> Deserialize<'de> for Read {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            super::deserialize(deserializer).map(Read)
        }
    }
}

struct Rfc3339;

impl de::Visitor<'_> for Rfc3339 {
    type Value = DateTime<Utc>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("an RFC 3339 formatted date and time string")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        if let Some(at) = read(text) {
            return Ok(at);
        }
        // What chrono's own `Deserialize for DateTime<Utc>` does.
        text.parse::<DateTime<FixedOffset>>()
            .map(|at| at.with_timezone(&Utc))
            .map_err(E::custom)
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z`, as [`write`] writes it; None for
/// anything else.
fn read(text: &str) -> Option<DateTime<Utc>> {
    let bytes = text.as_bytes();
    let (&b'Z', bytes) = bytes.split_last()? else {
        return None;
    };
    if bytes.len() < 19 {
        return None;
    }
    let number = |range: std::ops::Range<usize>| {
        bytes[range]
            .iter()
            .try_fold(0u32, |n, b| b.is_ascii_digit().then(|| n * 10 + u32::from(b - b'0')))
    };
    for (at, byte) in [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')] {
        if bytes[at] != byte {
            return None;
        }
    }
    let nano = match &bytes[19..] {
        [] => 0,
        [b'.', fraction @ ..] if (1..=9).contains(&fraction.len()) => {
            number(20..bytes.len())? * 10u32.pow(9 - fraction.len() as u32)
        }
        _ => return None,
    };
    let date = NaiveDate::from_ymd_opt(number(0..4)? as i32, number(5..7)?, number(8..10)?)?;
    let time = date.and_hms_nano_opt(number(11..13)?, number(14..16)?, number(17..19)?, nano)?;
    Some(time.and_utc())
}

/// `at` as chrono's RFC 3339 with `SecondsFormat::AutoSi` and `Z`, or None
/// where the fast path does not apply.
fn write<'a>(at: &DateTime<Utc>, buffer: &'a mut [u8; LONGEST]) -> Option<&'a str> {
    let year = at.year();
    let nano = at.nanosecond();
    if !(0..=9999).contains(&year) || nano >= 1_000_000_000 {
        return None;
    }
    let mut digits = |at: usize, value: u32, width: usize| {
        let mut value = value;
        for slot in buffer[at..at + width].iter_mut().rev() {
            *slot = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    digits(0, year as u32, 4);
    digits(5, at.month(), 2);
    digits(8, at.day(), 2);
    digits(11, at.hour(), 2);
    digits(14, at.minute(), 2);
    digits(17, at.second(), 2);
    let (fraction, width) = match nano {
        0 => (0, 0),
        n if n % 1_000_000 == 0 => (n / 1_000_000, 3),
        n if n % 1_000 == 0 => (n / 1_000, 6),
        n => (n, 9),
    };
    let mut end = 19;
    if width > 0 {
        digits(20, fraction, width);
        end = 20 + width;
    }
    for (at, byte) in [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':'), (19, b'.')] {
        buffer[at] = byte;
    }
    buffer[end] = b'Z';
    std::str::from_utf8(&buffer[..=end]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use rand::Rng;
    use serde::Deserialize;

    fn ours(at: &DateTime<Utc>) -> String {
        let mut serializer = serde_json::Serializer::new(Vec::new());
        serialize(at, &mut serializer).unwrap();
        String::from_utf8(serializer.into_inner()).unwrap()
    }

    #[test]
    fn writes_what_chrono_writes_for_random_instants() {
        let mut rng = rand::rng();
        for _ in 0..100_000 {
            let seconds = rng.random_range(-62_167_219_200i64..=253_402_300_799);
            // Each precision chrono picks from: whole seconds, millis, micros, nanos.
            let nano = match rng.random_range(0..4) {
                0 => 0,
                1 => rng.random_range(0..1_000) * 1_000_000,
                2 => rng.random_range(0..1_000_000) * 1_000,
                _ => rng.random_range(0..1_000_000_000),
            };
            let at = Utc.timestamp_opt(seconds, nano).unwrap();
            assert_eq!(ours(&at), serde_json::to_string(&at).unwrap(), "{seconds} s {nano} ns");
        }
    }

    #[test]
    fn reads_what_chrono_reads_for_random_instants_and_spellings() {
        let mut rng = rand::rng();
        for _ in 0..100_000 {
            let seconds = rng.random_range(-62_167_219_200i64..=253_402_300_799);
            let at = Utc.timestamp_opt(seconds, rng.random_range(0..1_000_000_000)).unwrap();
            let digits = rng.random_range(0..=9);
            let mut text = at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
            // 1 to 9 digits of fraction, or none.
            let dot = text.find('.').unwrap();
            text.replace_range(dot + 1 + digits..text.len() - 1, "");
            if digits == 0 {
                text.remove(dot);
            }
            let json = serde_json::to_string(&text).unwrap();
            let chrono: DateTime<Utc> = serde_json::from_str(&json).unwrap();
            let mut deserializer = serde_json::Deserializer::from_str(&json);
            assert_eq!(deserialize(&mut deserializer).unwrap(), chrono, "{text}");
        }
    }

    #[test]
    fn reads_other_spellings_and_refuses_what_chrono_refuses() {
        let read_both = |text: &str| {
            let json = serde_json::to_string(text).unwrap();
            let ours = deserialize(&mut serde_json::Deserializer::from_str(&json)).map_err(|e| e.to_string());
            let chrono = serde_json::from_str::<DateTime<Utc>>(&json).map_err(|e| e.to_string());
            (ours, chrono)
        };
        for text in [
            "2026-12-07T13:35:00+08:00",
            "2026-12-07t13:35:00z",
            "2026-12-07 13:35:00.5Z",
            "2016-12-31T23:59:60Z",
            "2026-02-30T00:00:00Z",
            "2026-12-07T24:00:00Z",
            "2026-12-07T13:35:00.Z",
            "2026-12-07T13:35:00.1234567891Z",
            "+2026-12-07T13:35:00Z",
            "2026-12-07",
            "",
        ] {
            let (ours, chrono) = read_both(text);
            assert_eq!(ours.is_ok(), chrono.is_ok(), "{text}: {ours:?} against {chrono:?}");
            if let (Ok(ours), Ok(chrono)) = (ours, chrono) {
                assert_eq!(ours, chrono, "{text}");
            }
        }
    }

    #[test]
    fn an_absent_or_null_option_is_none() {
        #[derive(Deserialize, Serialize, PartialEq, Debug)]
        struct Holder {
            #[serde(default, skip_serializing_if = "Option::is_none", with = "super::option")]
            at: Option<DateTime<Utc>>,
        }
        let at = Utc.timestamp_opt(1_796_000_000, 0).unwrap();
        let held = Holder { at: Some(at) };
        let text = serde_json::to_string(&held).unwrap();
        assert_eq!(text, r#"{"at":"2026-11-30T00:53:20Z"}"#);
        assert_eq!(serde_json::from_str::<Holder>(&text).unwrap(), held);
        assert_eq!(serde_json::from_str::<Holder>("{}").unwrap(), Holder { at: None });
        assert_eq!(
            serde_json::from_str::<Holder>(r#"{"at":null}"#).unwrap(),
            Holder { at: None }
        );
    }

    #[test]
    fn leaves_what_it_does_not_write_to_chrono() {
        let far = Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap();
        let before_year_zero = Utc.with_ymd_and_hms(-1, 12, 31, 23, 59, 59).unwrap();
        let leap = Utc.timestamp_opt(1_483_228_799, 1_500_000_000).unwrap();
        for at in [far, before_year_zero, leap] {
            assert_eq!(ours(&at), serde_json::to_string(&at).unwrap());
        }
    }

    #[test]
    fn reads_back_as_the_same_instant() {
        let at = Utc.timestamp_opt(1_796_000_000, 123_456_000).unwrap();
        let text = ours(&at);
        assert_eq!(text, "\"2026-11-30T00:53:20.123456Z\"");
        assert_eq!(serde_json::from_str::<DateTime<Utc>>(&text).unwrap(), at);
        assert_eq!(deserialize(&mut serde_json::Deserializer::from_str(&text)).unwrap(), at);
    }
}
