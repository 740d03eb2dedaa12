//! The deterministic synthetic event generator: realistic-looking playback,
//! gaming and login events for the shipped definitions in `dataflows/`.
//!
//! Invariant: the output is a pure function of [`GenOptions`]. The same
//! options give the same bytes on every run and every machine: randomness
//! comes only from a seeded, named-algorithm generator (`Xoshiro256PlusPlus`),
//! sampled with integer ranges and `random_bool` only (no floating-point
//! transcendental functions, whose last bits differ between platforms), and
//! everything fixed about an account (its devices, profiles, email, game
//! profile) is derived by hashing its index with the seed, so nothing grows
//! with the number of events except the title popularity table.
//!
//! Shape of the data:
//! - `events / 20` accounts; activity is skewed toward low account indexes.
//!   Each account has 1-5 profiles, 1-4 devices, an email (hex, sha-like),
//!   sometimes a second one, and with 30% chance a linked game profile.
//! - About 8% of accounts also use a shared device (`dev-shared-N`, one per
//!   1000 accounts), which ends up with far more than 20 identity neighbours:
//!   a hub for `max_links_by_type.device = 20`.
//! - Titles and games follow a Zipf law (exponent 1, integer weights).
//! - Time advances ~1 s per event from `start_ms`; 20% of the events arrive
//!   late by up to `jitter_ms`.
//! - ~70% playback (`ts` epoch ms), 15% gaming (`time` RFC 3339 with ms),
//!   15% login (`ts` epoch seconds).
//! - A `delete_share` of the events re-emits a recent event of the same topic
//!   with `"op":"delete"` (so it deletes something that exists), and a
//!   `malformed_share` of the lines is broken: not JSON, time missing, time as
//!   a boolean, or an id as an object.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

/// What to generate. Every default is documented on its field.
#[derive(Clone, Debug, PartialEq)]
pub struct GenOptions {
    /// Number of lines in total, over all topics (malformed ones included).
    pub events: u64,
    /// Seed of the random generator.
    pub seed: u64,
    /// Share of events that delete (re-emit a recent event with
    /// `"op":"delete"`). Default 0.01.
    pub delete_share: f64,
    /// Largest delay of an out-of-order event, in ms. Default 60 000.
    pub jitter_ms: i64,
    /// Share of lines that are broken (dead letters). Default 0.001.
    pub malformed_share: f64,
    /// Event time of the first event, epoch ms. Default 1 700 000 000 000
    /// (2023-11-14T22:13:20Z).
    pub start_ms: i64,
    /// Mean advance of event time per event, in microseconds (uniform in
    /// `0..2*mean`). Default 1 000 000 (1 s); `rdg demo` sets it from its
    /// rate so event time follows the wall clock.
    pub mean_step_us: i64,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            events: 1_000_000,
            seed: 0,
            delete_share: 0.01,
            jitter_ms: 60_000,
            malformed_share: 0.001,
            start_ms: 1_700_000_000_000,
            mean_step_us: 1_000_000,
        }
    }
}

/// What `generate` wrote: each file with its number of lines.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GenSummary {
    pub files: Vec<(PathBuf, u64)>,
}

/// The topics, in the order of their files in [`GenSummary`].
pub const TOPICS: [&str; 3] = ["playback", "gaming", "login"];

impl GenOptions {
    /// A live load: `events` events whose time starts at `now_ms` and
    /// follows the wall clock at `rate` events per second, out of order by
    /// up to 5 s (`rdg demo`, `rdg produce --rate`). Events of a paced load
    /// that started in 2023 would be years behind any event stamped with
    /// the time it happens, and a dataflow with retention would drop them
    /// as late.
    pub fn live(events: u64, seed: u64, rate: f64, now_ms: i64) -> GenOptions {
        GenOptions {
            events,
            seed,
            start_ms: now_ms,
            mean_step_us: (1_000_000.0 / rate.max(0.001)).round() as i64,
            jitter_ms: 5_000,
            ..Default::default()
        }
    }
}

/// Writes `playback.jsonl`, `gaming.jsonl` and `login.jsonl` into `out_dir`
/// (created if needed).
pub fn generate(opts: &GenOptions, out_dir: &Path) -> std::io::Result<GenSummary> {
    std::fs::create_dir_all(out_dir)?;
    let paths: Vec<PathBuf> = TOPICS
        .iter()
        .map(|t| out_dir.join(format!("{t}.jsonl")))
        .collect();
    let mut writers = Vec::with_capacity(TOPICS.len());
    for p in &paths {
        writers.push(BufWriter::with_capacity(1 << 20, File::create(p)?));
    }
    let mut counts = [0u64; TOPICS.len()];
    for (topic, _key, line) in events(opts) {
        let i = TOPICS.iter().position(|t| *t == topic).unwrap_or(0);
        writers[i].write_all(line.as_bytes())?;
        writers[i].write_all(b"\n")?;
        counts[i] += 1;
    }
    for w in &mut writers {
        w.flush()?;
    }
    Ok(GenSummary {
        files: paths.into_iter().zip(counts).collect(),
    })
}

/// Streaming form for a Kafka producer: yields `(topic, key, line)` in
/// generation order. The key is the account id (for a gaming event without a
/// linked account, the game profile id).
pub fn events(opts: &GenOptions) -> impl Iterator<Item = (&'static str, String, String)> + use<> {
    Generator::new(opts.clone())
}

const COUNTRIES: [&str; 10] = ["NL", "US", "DE", "FR", "GB", "BR", "JP", "IN", "SE", "ES"];
const MATURITY: [&str; 3] = ["adult", "teen", "kids"];
const APP_VERSIONS: [&str; 4] = ["7.1.0", "7.2.3", "8.0.1", "8.1.0"];
const METHODS: [&str; 3] = ["password", "sso", "token"];
const PLATFORMS: [&str; 4] = ["xbox", "playstation", "pc", "switch"];
const TAG_WORDS: [&str; 8] = [
    "Shadow", "Pixel", "Turbo", "Nova", "Raven", "Blaze", "Echo", "Frost",
];
/// Recent events kept per topic, the pool that deletes draw from.
const RECENT: usize = 64;

/// A mixing hash (splitmix64's finalizer): the source of everything fixed
/// about an account.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// What is fixed about one account, derived from its index.
struct Account {
    index: u64,
    profiles: u64,
    /// Private devices are `dev{index*4+k}`; a shared one is `dev-shared-{j}`.
    devices: u64,
    shared_device: Option<u64>,
    second_email: bool,
    has_game_profile: bool,
    country: &'static str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Device {
    Private(u64),
    Shared(u64),
    Console(u64),
}

impl Device {
    fn write(self, out: &mut String) {
        let _ = match self {
            Device::Private(n) => write!(out, "\"dev{n}\""),
            Device::Shared(n) => write!(out, "\"dev-shared-{n}\""),
            Device::Console(n) => write!(out, "\"dev-con{n}\""),
        };
    }
}

/// The fields of one event, kept so a later delete can re-emit it.
#[derive(Clone, Debug, PartialEq)]
enum Event {
    Playback(Playback),
    Gaming(Gaming),
    Login(Login),
}

#[derive(Clone, Debug, PartialEq)]
/// A playback event's fields.
struct Playback {
    account: u64,
    profile: u64,
    maturity: &'static str,
    country: &'static str,
    title: u64,
    /// `None`: the `device_id` field is null (a web player).
    device: Option<Device>,
    /// 0 play_start, 1 play_stop, 2 pause.
    kind: u8,
    position: u64,
    app: &'static str,
}

#[derive(Clone, Debug, PartialEq)]
/// A gaming event's fields.
struct Gaming {
    game_profile: GameProfile,
    game: u64,
    game_as_int: bool,
    device: Device,
    end: bool,
    minutes: u64,
    platform: &'static str,
}

#[derive(Clone, Debug, PartialEq)]
/// A login event's fields.
struct Login {
    account: u64,
    device: Device,
    email: u64,
    success: bool,
    method: &'static str,
    country: &'static str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GameProfile {
    /// `gp{account}`, linked to that account.
    Linked(u64),
    /// `gpg{n}`, no linked account: the field is null or (when `absent`)
    /// left out.
    Guest { n: u64, absent: bool },
}

/// How a line is broken on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mangle {
    None,
    NotJson,
    TimeMissing,
    TimeBool,
    IdObject,
}

struct Generator {
    opts: GenOptions,
    rng: Xoshiro256PlusPlus,
    remaining: u64,
    now_ms: i64,
    /// Event time in µs, so small mean steps stay exact on average.
    now_us: i64,
    mean_step_us: i64,
    accounts: u64,
    shared_devices: u64,
    guests: u64,
    /// Cumulative Zipf weights of the titles and the games.
    titles: Vec<u64>,
    games: Vec<u64>,
    recent: [VecDeque<Event>; 3],
}

/// Cumulative weights `2^40 / rank`: a Zipf law with exponent 1 computed in
/// integers, so it samples the same everywhere.
fn zipf_table(n: u64) -> Vec<u64> {
    let mut total = 0u64;
    (1..=n.max(1))
        .map(|k| {
            total += (1u64 << 40) / k;
            total
        })
        .collect()
}

fn clamp_share(p: f64) -> f64 {
    if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) }
}

impl Generator {
    fn new(opts: GenOptions) -> Generator {
        let accounts = (opts.events / 20).max(10);
        let titles = (opts.events / 200).clamp(50, 100_000);
        Generator {
            rng: Xoshiro256PlusPlus::seed_from_u64(opts.seed),
            remaining: opts.events,
            now_ms: opts.start_ms,
            now_us: opts.start_ms.saturating_mul(1000),
            mean_step_us: opts.mean_step_us.max(0),
            accounts,
            shared_devices: (accounts / 1000).max(1),
            guests: (accounts / 10).max(5),
            titles: zipf_table(titles),
            games: zipf_table(500),
            recent: Default::default(),
            opts,
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(clamp_share(p))
    }

    fn below(&mut self, n: u64) -> u64 {
        if n <= 1 {
            0
        } else {
            self.rng.random_range(0..n)
        }
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    fn zipf(&mut self, table_of_titles: bool) -> u64 {
        let table = if table_of_titles {
            &self.titles
        } else {
            &self.games
        };
        let total = table.last().copied().unwrap_or(1);
        let r = self.rng.random_range(0..total);
        table.partition_point(|&c| c <= r) as u64
    }

    /// An account index, skewed toward low indexes (heavy users).
    fn active_account(&mut self) -> u64 {
        let n = self.accounts;
        let r = self.below(n);
        // r*r/n is below n and puts more weight on small indexes.
        ((r as u128 * r as u128) / n as u128) as u64
    }

    fn account(&self, index: u64) -> Account {
        let h = mix(self.opts.seed ^ mix(index));
        let h2 = mix(h);
        Account {
            index,
            profiles: 1 + h % 5,
            devices: 1 + (h >> 8) % 4,
            shared_device: ((h >> 16) % 100 < 8).then(|| (h2 >> 8) % self.shared_devices),
            second_email: (h >> 24) % 100 < 5,
            has_game_profile: (h >> 32) % 100 < 30,
            country: COUNTRIES[((h >> 40) % COUNTRIES.len() as u64) as usize],
        }
    }

    fn device_of(&mut self, a: &Account) -> Device {
        if let Some(s) = a.shared_device
            && self.chance(0.3)
        {
            return Device::Shared(s);
        }
        Device::Private(a.index * 4 + self.below(a.devices))
    }

    fn new_event(&mut self, topic: usize) -> Event {
        let index = self.active_account();
        let a = self.account(index);
        match topic {
            0 => {
                let profile = self.below(a.profiles);
                let device = if self.chance(0.03) {
                    None
                } else {
                    Some(self.device_of(&a))
                };
                let kind = match self.below(100) {
                    0..45 => 0,
                    45..85 => 1,
                    _ => 2,
                };
                let maturity =
                    MATURITY[(mix(a.index ^ (profile << 40)) % MATURITY.len() as u64) as usize];
                Event::Playback(Playback {
                    account: a.index,
                    profile,
                    maturity,
                    country: a.country,
                    title: self.zipf(true),
                    device,
                    kind,
                    position: if kind == 0 && self.chance(0.5) {
                        0
                    } else {
                        self.below(7200)
                    },
                    app: self.pick(&APP_VERSIONS),
                })
            }
            1 => {
                let game_profile = if a.has_game_profile {
                    GameProfile::Linked(a.index)
                } else {
                    let n = self.below(self.guests);
                    GameProfile::Guest {
                        n,
                        absent: self.chance(0.5),
                    }
                };
                let device = match game_profile {
                    GameProfile::Linked(i) if self.chance(0.6) => Device::Console(i),
                    GameProfile::Linked(_) => self.device_of(&a),
                    GameProfile::Guest { n, .. } => Device::Console(self.accounts + n),
                };
                let platform = match game_profile {
                    GameProfile::Linked(i) => PLATFORMS[(mix(i) % 4) as usize],
                    GameProfile::Guest { n, .. } => PLATFORMS[(mix(n) % 4) as usize],
                };
                Event::Gaming(Gaming {
                    game_profile,
                    game: 1000 + self.zipf(false),
                    game_as_int: self.chance(0.3),
                    device,
                    end: self.chance(0.5),
                    minutes: 1 + self.below(180),
                    platform,
                })
            }
            _ => {
                let email = if a.second_email { self.below(2) } else { 0 };
                let country = if self.chance(0.05) {
                    self.pick(&COUNTRIES)
                } else {
                    a.country
                };
                Event::Login(Login {
                    account: a.index,
                    device: self.device_of(&a),
                    email,
                    success: !self.chance(0.1),
                    method: self.pick(&METHODS),
                    country,
                })
            }
        }
    }

    fn next_line(&mut self) -> (&'static str, String, String) {
        self.now_us += self.rng.random_range(0..(2 * self.mean_step_us).max(1));
        self.now_ms = self.now_us.div_euclid(1000);
        let mut time = self.now_ms;
        if self.opts.jitter_ms > 0 && self.chance(0.2) {
            time -= self.rng.random_range(0..=self.opts.jitter_ms);
        }
        let topic = match self.below(100) {
            0..70 => 0,
            70..85 => 1,
            _ => 2,
        };
        let delete = self.chance(self.opts.delete_share) && !self.recent[topic].is_empty();
        let event = if delete {
            let i = self.below(self.recent[topic].len() as u64) as usize;
            self.recent[topic][i].clone()
        } else {
            let e = self.new_event(topic);
            if self.recent[topic].len() == RECENT {
                self.recent[topic].pop_front();
            }
            self.recent[topic].push_back(e.clone());
            e
        };
        let mangle = if self.chance(self.opts.malformed_share) {
            match self.below(4) {
                0 => Mangle::NotJson,
                1 => Mangle::TimeMissing,
                2 => Mangle::TimeBool,
                _ => Mangle::IdObject,
            }
        } else {
            Mangle::None
        };
        let (key, mut line) = render(&event, time, delete, mangle);
        if mangle == Mangle::NotJson {
            // Cut in the middle (all our text is ASCII) and add junk.
            line.truncate(line.len() / 2);
            line.push_str(" <<truncated");
        }
        (TOPICS[topic], key, line)
    }
}

impl Iterator for Generator {
    type Item = (&'static str, String, String);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        Some(self.next_line())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::try_from(self.remaining).unwrap_or(usize::MAX);
        (n, Some(n))
    }
}

/// A sha-256-looking hex string for an account's `k`-th email.
fn email_hash(out: &mut String, account: u64, k: u64) {
    let mut h = mix(account.wrapping_mul(31).wrapping_add(k) ^ 0x5eed);
    for _ in 0..4 {
        let _ = write!(out, "{h:016x}");
        h = mix(h);
    }
}

/// Writes `"key":` after a comma unless it is the first field.
fn key(out: &mut String, name: &str) {
    if !out.ends_with('{') {
        out.push(',');
    }
    out.push('"');
    out.push_str(name);
    out.push_str("\":");
}

fn str_field(out: &mut String, name: &str, value: &str) {
    key(out, name);
    out.push('"');
    out.push_str(value);
    out.push('"');
}

/// Writes an id field, or `{"id": ...}` when the line is mangled that way.
fn id_field(out: &mut String, name: &str, mangle: Mangle, value: impl FnOnce(&mut String)) {
    key(out, name);
    if mangle == Mangle::IdObject {
        out.push_str("{\"id\":");
        value(out);
        out.push('}');
    } else {
        value(out);
    }
}

fn time_field(out: &mut String, name: &str, mangle: Mangle, value: impl FnOnce(&mut String)) {
    match mangle {
        Mangle::TimeMissing => {}
        Mangle::TimeBool => {
            key(out, name);
            out.push_str("true");
        }
        _ => {
            key(out, name);
            value(out);
        }
    }
}

/// RFC 3339 with milliseconds in UTC: `2023-11-14T22:13:20.123Z`.
pub(crate) fn rfc3339_ms(out: &mut String, ms: i64) {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(
        out,
        "\"{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z\"",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    );
}

/// Formats one event as a JSON line; returns (key, line).
fn render(event: &Event, time: i64, delete: bool, mangle: Mangle) -> (String, String) {
    let mut out = String::with_capacity(256);
    out.push('{');
    let key_id = match event {
        Event::Playback(e) => e.render(&mut out, time, mangle),
        Event::Gaming(e) => e.render(&mut out, time, mangle),
        Event::Login(e) => e.render(&mut out, time, mangle),
    };
    if delete {
        str_field(&mut out, "op", "delete");
    }
    out.push('}');
    (key_id, out)
}

impl Playback {
    /// Writes this event's fields after the line's `{`; returns its key.
    fn render(&self, out: &mut String, time: i64, mangle: Mangle) -> String {
        let Playback {
            account,
            profile,
            maturity,
            country,
            title,
            device,
            kind,
            position,
            app,
        } = self;
        let key_id = format!("acc{account}");
        time_field(out, "ts", mangle, |o| {
            let _ = write!(o, "{time}");
        });
        str_field(
            out,
            "event",
            ["play_start", "play_stop", "pause"][usize::from(*kind).min(2)],
        );
        id_field(out, "account_id", mangle, |o| {
            let _ = write!(o, "\"{key_id}\"");
        });
        let _ = write!(out, ",\"profile_id\":\"acc{account}-p{profile}\"");
        let _ = write!(out, ",\"title_id\":\"title{title}\"");
        key(out, "device_id");
        match device {
            Some(d) => d.write(out),
            None => out.push_str("null"),
        }
        str_field(out, "country", country);
        let _ = write!(out, ",\"profile\":{{\"maturity\":\"{maturity}\"}}");
        let _ = write!(out, ",\"position_s\":{position}");
        str_field(out, "app_version", app);
        key_id
    }
}

impl Gaming {
    /// Writes this event's fields after the line's `{`; returns its key.
    fn render(&self, out: &mut String, time: i64, mangle: Mangle) -> String {
        let Gaming {
            game_profile,
            game,
            game_as_int,
            device,
            end,
            minutes,
            platform,
        } = self;
        time_field(out, "time", mangle, |o| rfc3339_ms(o, time));
        str_field(
            out,
            "event",
            if *end { "session_end" } else { "session_start" },
        );
        let gp = match game_profile {
            GameProfile::Linked(a) => format!("gp{a}"),
            GameProfile::Guest { n, .. } => format!("gpg{n}"),
        };
        id_field(out, "game_profile_id", mangle, |o| {
            let _ = write!(o, "\"{gp}\"");
        });
        key(out, "game_id");
        let _ = if *game_as_int {
            write!(out, "{game}")
        } else {
            write!(out, "\"{game}\"")
        };
        let key_id = match game_profile {
            GameProfile::Linked(a) => {
                let _ = write!(out, ",\"linked_account_id\":\"acc{a}\"");
                format!("acc{a}")
            }
            GameProfile::Guest { absent, .. } => {
                if !absent {
                    out.push_str(",\"linked_account_id\":null");
                }
                gp.clone()
            }
        };
        key(out, "device_id");
        device.write(out);
        str_field(out, "platform", platform);
        let tag_seed = mix(gp.len() as u64 ^ mix(gp.bytes().map(u64::from).sum()));
        let _ = write!(
            out,
            ",\"gamertag\":\"{}{}\"",
            TAG_WORDS[(tag_seed % 8) as usize],
            tag_seed % 1000
        );
        if *end {
            let _ = write!(out, ",\"minutes\":{minutes}");
        }
        key_id
    }
}

impl Login {
    /// Writes this event's fields after the line's `{`; returns its key.
    fn render(&self, out: &mut String, time: i64, mangle: Mangle) -> String {
        let Login {
            account,
            device,
            email,
            success,
            method,
            country,
        } = self;
        let key_id = format!("acc{account}");
        time_field(out, "ts", mangle, |o| {
            let _ = write!(o, "{}", time.div_euclid(1000));
        });
        str_field(out, "result", if *success { "success" } else { "failure" });
        id_field(out, "account_id", mangle, |o| {
            let _ = write!(o, "\"{key_id}\"");
        });
        key(out, "device_id");
        device.write(out);
        key(out, "email_sha256");
        out.push('"');
        email_hash(out, *account, *email);
        out.push('"');
        str_field(out, "method", method);
        let _ = write!(out, ",\"geo\":{{\"country\":\"{country}\"}}");
        key_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn opts(events: u64, seed: u64) -> GenOptions {
        GenOptions {
            events,
            seed,
            ..GenOptions::default()
        }
    }

    fn all_bytes(o: &GenOptions) -> Vec<u8> {
        let mut v = Vec::new();
        for (t, k, l) in events(o) {
            v.extend_from_slice(t.as_bytes());
            v.push(b'|');
            v.extend_from_slice(k.as_bytes());
            v.push(b'|');
            v.extend_from_slice(l.as_bytes());
            v.push(b'\n');
        }
        v
    }

    #[test]
    fn same_seed_same_bytes_different_seed_different_bytes() {
        let a = all_bytes(&opts(5000, 7));
        assert_eq!(a, all_bytes(&opts(5000, 7)));
        assert_ne!(a, all_bytes(&opts(5000, 8)));
    }

    #[test]
    fn generate_writes_the_same_files_as_the_stream() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("out");
        let o = opts(3000, 1);
        let summary = generate(&o, &dir).expect("generate");
        let mut total = 0;
        for (i, (path, lines)) in summary.files.iter().enumerate() {
            let text = std::fs::read_to_string(path).expect("read");
            assert_eq!(text.lines().count() as u64, *lines);
            let expected: String = events(&o)
                .filter(|(t, _, _)| *t == TOPICS[i])
                .map(|(_, _, l)| l + "\n")
                .collect();
            assert_eq!(text, expected);
            total += lines;
        }
        assert_eq!(total, 3000);
    }

    /// Every field path a shipped definition reads (ids, props, time,
    /// conditions), per topic, read from the TOML without rdg's spec code.
    fn fields_read() -> BTreeMap<String, BTreeSet<String>> {
        fn walk(v: &toml::Value, key: Option<&str>, out: &mut BTreeSet<String>) {
            match v {
                toml::Value::String(s) => {
                    if matches!(key, Some("id" | "field" | "event_time" | "prop")) {
                        out.insert(s.clone());
                    }
                }
                toml::Value::Table(t) => {
                    for (k, v) in t {
                        match k.as_str() {
                            "props" => {
                                if let toml::Value::Table(p) = v {
                                    for pv in p.values() {
                                        walk(pv, Some("prop"), out);
                                    }
                                }
                            }
                            "topic" | "type" | "equals" | "in" | "retention" => {}
                            _ => walk(v, Some(k), out),
                        }
                    }
                }
                toml::Value::Array(a) => {
                    for x in a {
                        walk(x, key, out);
                    }
                }
                _ => {}
            }
        }
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("dataflows");
        let mut out = BTreeMap::new();
        for t in TOPICS {
            let text = std::fs::read_to_string(dir.join(format!("{t}.toml"))).expect("read");
            let v: toml::Value = toml::from_str(&text).expect("toml");
            let topic = v["source"]["topic"].as_str().expect("topic").to_string();
            let mut fields = BTreeSet::new();
            walk(&v, None, &mut fields);
            out.insert(topic, fields);
        }
        out
    }

    fn get<'v>(v: &'v serde_json::Value, path: &str) -> Option<&'v serde_json::Value> {
        path.split('.')
            .try_fold(v, |v, p| v.as_object().and_then(|o| o.get(p)))
    }

    #[test]
    fn events_carry_every_field_the_shipped_definitions_read() {
        let wanted = fields_read();
        assert_eq!(
            wanted.keys().map(String::as_str).collect::<Vec<_>>(),
            vec!["gaming", "login", "playback"]
        );
        assert!(wanted["playback"].contains("profile.maturity"));
        assert!(wanted["login"].contains("geo.country"));
        let mut seen: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        let mut game_id_kinds = BTreeSet::new();
        for (topic, key, line) in events(&opts(20_000, 3)) {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            assert!(v.is_object(), "{line}");
            assert!(key.starts_with("acc") || key.starts_with("gp"), "{key}");
            for f in &wanted[topic] {
                if get(&v, f).is_some_and(|x| !x.is_null()) {
                    seen.entry(topic).or_default().insert(f.clone());
                }
            }
            if let Some(g) = v.get("game_id") {
                game_id_kinds.insert(if g.is_string() { "string" } else { "int" });
            }
        }
        for (topic, fields) in &wanted {
            assert_eq!(
                seen.get(topic.as_str()),
                Some(fields),
                "fields of {topic} never generated"
            );
        }
        assert_eq!(game_id_kinds.len(), 2);
    }

    #[test]
    fn times_have_the_right_form() {
        let o = opts(5000, 4);
        for (topic, _, line) in events(&o) {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let ms = match topic {
                "playback" => v["ts"].as_i64().map(|t| t as f64),
                "login" => v["ts"].as_i64().map(|t| t as f64 * 1000.0),
                _ => v["time"].as_str().map(|s| {
                    assert_eq!(s.len(), 24, "{s}");
                    chrono::DateTime::parse_from_rfc3339(s)
                        .expect("rfc3339")
                        .timestamp_millis() as f64
                }),
            };
            // Malformed lines may lack a time or carry a boolean.
            if let Some(ms) = ms {
                let start = o.start_ms as f64;
                assert!(
                    ms >= start - 61_000.0 && ms < start + 5000.0 * 2000.0,
                    "{line}"
                );
            }
        }
    }

    /// An event's time in epoch ms, from its topic's time field.
    fn event_ms(topic: &str, v: &serde_json::Value) -> Option<i64> {
        match topic {
            "playback" => v["ts"].as_i64(),
            "login" => v["ts"].as_i64().map(|s| s * 1000),
            _ => v["time"]
                .as_str()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                .map(|d| d.timestamp_millis()),
        }
    }

    #[test]
    fn a_live_load_s_times_follow_the_clock_at_its_rate() {
        // 20 000 events at 10 000/s from `now`: event times within 5 s of
        // the 2 s the load lasts, and the last ones near its end.
        let now = 1_796_000_000_000;
        let o = GenOptions::live(20_000, 3, 10_000.0, now);
        let mut last_playback = 0;
        for (topic, _, line) in events(&o) {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let ms = event_ms(topic, &v);
            if let Some(ms) = ms.filter(|_| v["account_id"].is_string()) {
                assert!(ms >= now - 6_000 && ms < now + 2_000 + 1_000, "{line}");
                if topic == "playback" {
                    last_playback = ms;
                }
            }
        }
        assert!(last_playback > now + 1_000 - 6_000, "{last_playback}");
    }

    #[test]
    fn rfc3339_matches_chrono() {
        for ms in [
            0i64,
            1_700_000_000_123,
            951_782_400_000, // 2000-02-29
            -1,
            4_102_444_799_999,
        ] {
            let mut s = String::new();
            rfc3339_ms(&mut s, ms);
            let c = chrono::DateTime::from_timestamp_millis(ms)
                .expect("in range")
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            assert_eq!(s, format!("\"{c}\""));
        }
    }

    #[test]
    fn shares_are_roughly_respected() {
        let o = GenOptions {
            delete_share: 0.05,
            malformed_share: 0.01,
            ..opts(40_000, 11)
        };
        let mut per_topic: BTreeMap<&str, u64> = BTreeMap::new();
        let (mut deletes, mut malformed, mut late) = (0u64, 0u64, 0u64);
        let mut ignored_pause = 0u64;
        let mut max_ms = i64::MIN;
        for (topic, _, line) in events(&o) {
            *per_topic.entry(topic).or_default() += 1;
            let v: serde_json::Value = match serde_json::from_str(&line) {
                Ok(v) => v,
                Err(_) => {
                    malformed += 1;
                    continue;
                }
            };
            let t = event_ms(topic, &v);
            let bad_id = ["account_id", "game_profile_id"]
                .iter()
                .any(|f| v.get(*f).is_some_and(|x| x.is_object()));
            match t {
                None => malformed += 1,
                _ if bad_id => malformed += 1,
                Some(t) => {
                    if t + 2000 < max_ms {
                        late += 1;
                    }
                    max_ms = max_ms.max(t);
                }
            }
            if v.get("op").and_then(|x| x.as_str()) == Some("delete") {
                deletes += 1;
            }
            if v.get("event").and_then(|x| x.as_str()) == Some("pause") {
                ignored_pause += 1;
            }
        }
        let share = |n: u64| n as f64 / 40_000.0;
        assert!((share(per_topic["playback"]) - 0.70).abs() < 0.02);
        assert!((share(per_topic["gaming"]) - 0.15).abs() < 0.02);
        assert!((share(per_topic["login"]) - 0.15).abs() < 0.02);
        assert!((share(deletes) - 0.05).abs() < 0.01, "{deletes}");
        assert!((share(malformed) - 0.01).abs() < 0.004, "{malformed}");
        assert!(share(late) > 0.1, "{late}");
        assert!(ignored_pause > 0);
    }

    #[test]
    fn shared_devices_become_hubs() {
        // Distinct accounts per device over the playback and login events.
        let mut neighbours: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (topic, key, line) in events(&opts(200_000, 5)) {
            if topic == "gaming" {
                continue;
            }
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if let Some(d) = v["device_id"].as_str() {
                neighbours.entry(d.to_string()).or_default().insert(key);
            }
        }
        let hubs = neighbours.values().filter(|n| n.len() > 20).count();
        assert!(hubs >= 5, "{hubs}");
        let private = neighbours
            .iter()
            .filter(|(d, _)| !d.starts_with("dev-shared"))
            .all(|(_, n)| n.len() == 1);
        assert!(private);
    }

    #[test]
    fn bad_options_do_not_panic() {
        let o = GenOptions {
            events: 100,
            delete_share: 7.0,
            malformed_share: f64::NAN,
            jitter_ms: -5,
            ..GenOptions::default()
        };
        assert_eq!(events(&o).count(), 100);
        assert_eq!(events(&opts(0, 0)).count(), 0);
    }
}
