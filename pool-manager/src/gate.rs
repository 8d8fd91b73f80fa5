//! The throttle gate: how many new replenishment boots may start now, per
//! availability zone (the boot window) and per API service (the
//! Retry-After pauses). Purchases (cold boots) are never held back by it,
//! but they count toward the load it sees.
//!
//! - **Retry-After, per API service.** A throttle (a 429/413, or a 503
//!   naming a Retry-After) seen by any boot, or by a purchase's calls (its
//!   creates and attaches), pauses the service that answered (compute,
//!   volume, network, image, identity: [`ThrottledCall`]): one regional API for every
//!   AZ, so the pause holds every AZ's calls to it, until the time the
//!   cloud named, stretched for each pool by its own random factor in
//!   `[1, 1 + jitter]` (drawn once per pause, when the pool first asks) so
//!   the pools do not return in lockstep. *New* refill boots wait out the
//!   pauses of the services they call ([`REFILL_SERVICES`]: Nova's and
//!   Keystone's; a
//!   create's Glance and Neutron name lookups are cached for minutes, and
//!   a 429 to one counts as the create's), so a purchase's Cinder or
//!   Neutron 429 holds no refill. (Single calls are retried after
//!   Retry-After by `Shared::retry`, a purchase's too; the gate keeps the
//!   replenisher from adding calls meanwhile.) A compute 429 to a boot's
//!   own call (its quota poll, create or status read) also halves the
//!   window of the boot's AZ, once per throttling episode there. A
//!   purchase's cold boot is a boot: its quota poll (Nova's limits, polled
//!   for the boot it is about to start), create and status reads halve the
//!   zone's window on a Nova 429; the purchase's other calls (its volume,
//!   its tenant port, its attaches, Nova's too) pause their service and
//!   halve nothing, as they add no build to the zone's compute hosts. A 429 to the token renewal inside any call is Keystone's
//!   ([`CloudService::Identity`]): refills wait it out (every call needs a
//!   token, [`REFILL_SERVICES`]) and no window is halved.
//! - **AIMD window, per AZ.** Builds in flight per AZ (boot request until the
//!   server is ACTIVE: the part compute hosts serialize; mysqld then starts
//!   inside the guest) are limited by a window that grows while builds
//!   finish near the AZ's *baseline* build time and shrinks multiplicatively
//!   on latency inflation (or a compute 429 to a boot there, above), at
//!   most once per round trip (only boots started
//!   once the builds in flight fit the smaller window can cause another).
//!   Growth: slow start (+1 per good build) until a build is slower than
//!   `grow_below` x the baseline, then a conservative slow start (+1/4 per
//!   build) for a few rounds of a window of builds each, which resumes slow
//!   start if a round is faster than the builds before the slow one (that
//!   one was jitter), else gives way to congestion avoidance (+1/window per
//!   build), as RFC 9406 (HyStart++) does for TCP. The decrease halves the
//!   window but never below the builds that ended within the last baseline
//!   build time: by Little's law a smaller window would carry fewer builds
//!   than the hosts just delivered, so it would lose throughput without
//!   shortening any queue. "Near" and "inflated" are
//!   judged on a smoothed ratio of build time to baseline (an EWMA over the
//!   last few builds), so one slow build among jittery ones does not shrink
//!   the window. The baseline is measured on
//!   builds that started with few others in flight, so it tracks what an
//!   uncontended build costs *now*: if the whole cloud slows down (IOPS
//!   throttling), lone builds slow down too and the baseline follows, while
//!   contention from our own concurrency shows up as inflation. The window
//!   grows only while it is being used (a pool booting one instance at a
//!   time says nothing about twenty). The replenisher's boots go past it
//!   by what `sizing::decide` allows beyond it: a pool's sustained demand,
//!   and one boot for a pool below its `min_ready` or its fixed target with
//!   none in flight, so one pool's demand never leaves another without a
//!   boot.
//! - **Quota.** The cloud's own limits (Nova `/limits` and Neutron's port
//!   quota, through `Cloud::boot_headroom`) are polled per flavor every
//!   `headroom_interval` by the replenisher and by purchases in line for
//!   quota (sooner once a refusal made the reading stale, and, for a
//!   purchase in line, once a server was seen gone since the poll was
//!   sent; never while Nova waits out a throttle, save a flavor's
//!   first poll for a purchase), not per boot, and cached, with
//!   the ports the unsold pool instances will yet take for their sales
//!   ([`ports_kept_for_sale`], counted by the caller): speculative refills
//!   leave those, purchases (first in line) judge Neutron's count as is;
//!   a purchase made its tenant's port before it asks, so its server needs
//!   one port more, not two, once a poll sent after the port counts it.
//!   A poll without the port quota (Neutron refused or failed to tell
//!   it) is Nova's quotas' alone, and the status says why
//!   ([`HeadroomStatus::ports_unknown`]).
//!   Boots started since a poll was sent (any pool, purchases included:
//!   quota is per project) are subtracted from the cached headroom, and so
//!   are boots started before whose create the cloud had not answered yet
//!   (on its way, or waiting out a 429: not in the cloud's count either;
//!   one answered while the poll was on its way may be counted twice, the
//!   safe side; of the ports, a boot whose instance was recorded holds
//!   none from refills, as the caller's count of those kept for sale holds
//!   its two, and its management port, not made yet, from a purchase,
//!   which does not leave those), each as what
//!   one server of its own flavor takes of each quota (a 4-vCPU boot takes
//!   four 1-vCPU servers' worth of cores, as that flavor's own poll says; a boot of a flavor never polled
//!   counts as one server of the flavor asked about), and so are purchases
//!   waiting for quota, each as one server of its flavor: they are first
//!   in line, speculative refills get what is left. A purchase that finds
//!   room takes it under the gate's lock (admitted, one server of its
//!   flavor) until its boot's ticket holds it: purchases woken together
//!   by one freed server boot one server, not one each. At zero,
//!   speculative refills stop until the next poll (the hold ends when it
//!   is due: a pool that wants boots then polls again before it boots,
//!   and a pool at its target, which does not poll, is not shown held by
//!   an answer gone stale). When the limits call
//!   fails, nothing is capped and the refusal-driven pause below paces
//!   refills: a `QuotaExceeded` stops speculative refills in every AZ for a
//!   backoff that doubles while the cloud keeps refusing, and starts over
//!   after a boot sent since the last refusal reaches ACTIVE (quota is
//!   charged at the create: one sent before says nothing of it now) or
//!   once the last pause ended more than `quota_backoff_max` ago. The
//!   pause is for headroom that cannot be read: a flavor whose poll, sent
//!   after the last refusal, read its limits is held by that poll's cap
//!   instead (room, or none until its next poll), not by the pause.
//!   Unless a boot such a poll let through (a refill, or a purchase on
//!   the room it read) was refused while the pause lasted: the polls then
//!   do not see what refuses (the port quota when Neutron will not tell
//!   it, another user of the project taking the room first), and would
//!   lift the pause at every refusal, so the pause holds whatever they
//!   show until the backoff starts over.
//!
//! [`Gate`] is pure and synchronous (instants are passed in); the replenisher
//! holds it behind a mutex and reports to it through `BootTicket`s.

use crate::allocator::deadline_after;
use crate::cloud::{BootHeadroom, QuotaLeft, MAX_RETRY_AFTER, MIN_RETRY_PAUSE, PORTS};
use crate::events::CloudService;
use crate::model::InstanceState;
use crate::text;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

pub const DEFAULT_INITIAL_WINDOW: u32 = 8;
pub const DEFAULT_MAX_WINDOW: u32 = 64;
pub const DEFAULT_GROW_BELOW: f64 = 1.2;
pub const DEFAULT_SHRINK_ABOVE: f64 = 1.4;
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);
/// Weight of the newest boot in the smoothed latency ratio (as TCP's SRTT).
pub const RATIO_SMOOTHING: f64 = 0.25;
pub const DEFAULT_QUOTA_BACKOFF: Duration = Duration::from_secs(30);
pub const DEFAULT_QUOTA_BACKOFF_MAX: Duration = Duration::from_secs(15 * 60);
/// How often each flavor's quota headroom is polled: a GET of Nova's
/// `/limits` (and of Neutron's quota details) is cheap, but one per boot
/// would add a call to every boot.
pub const DEFAULT_HEADROOM_INTERVAL: Duration = Duration::from_secs(30);
/// Recent build times kept per AZ to re-measure a stale baseline.
const RECENT: usize = 8;
/// Conservative slow start (RFC 9406): rounds before congestion avoidance,
/// and how much slower than slow start the window grows meanwhile.
const CSS_ROUNDS: u32 = 5;
const CSS_GROWTH_DIVISOR: f64 = 4.0;

/// How the gate behaves. Defaults suit a real cloud.
#[derive(Clone, Debug, PartialEq)]
pub struct GateSettings {
    /// Off: no window and no pauses; only the pool's own boot cap applies.
    pub enabled: bool,
    pub initial_window: u32,
    pub min_window: u32,
    pub max_window: u32,
    /// A build finishing within this factor of the baseline lets the window grow.
    pub grow_below: f64,
    /// Builds slower than this factor of the baseline shrink the window.
    pub shrink_above: f64,
    /// Builds that never had more than this many builds in flight in the AZ
    /// alongside them (themselves included) measure the baseline.
    pub baseline_max_in_flight: u32,
    /// A baseline not re-measured for this long is replaced by the fastest
    /// recent boot when every recent boot was inflated (the cloud slowed
    /// down for everyone, not because of us).
    pub baseline_ttl: Duration,
    /// Pause after a 429/413 without Retry-After.
    pub default_retry_after: Duration,
    /// Retry-After is stretched by a random factor in `[1, 1 + jitter]`.
    pub retry_after_jitter: f64,
    /// First pause after a quota refusal; doubles up to `quota_backoff_max`.
    pub quota_backoff: Duration,
    pub quota_backoff_max: Duration,
    /// How often each flavor's quota headroom is polled from the cloud.
    pub headroom_interval: Duration,
    /// Seed of the jitter.
    pub seed: u64,
}

impl Default for GateSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            initial_window: DEFAULT_INITIAL_WINDOW,
            min_window: 1,
            max_window: DEFAULT_MAX_WINDOW,
            grow_below: DEFAULT_GROW_BELOW,
            shrink_above: DEFAULT_SHRINK_ABOVE,
            baseline_max_in_flight: 2,
            baseline_ttl: Duration::from_secs(30 * 60),
            default_retry_after: DEFAULT_RETRY_AFTER,
            retry_after_jitter: 0.2,
            quota_backoff: DEFAULT_QUOTA_BACKOFF,
            quota_backoff_max: DEFAULT_QUOTA_BACKOFF_MAX,
            headroom_interval: DEFAULT_HEADROOM_INTERVAL,
            seed: 0,
        }
    }
}

impl GateSettings {
    /// A gate that never holds anything back (a plain fixed-concurrency replenisher).
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }
}

/// The API services whose Retry-After pause holds the replenisher's
/// boots: a refill boot's calls are Nova's (its quota poll, create,
/// status reads and delete). Glance's and Neutron's name lookups in a
/// create are cached for minutes, and a 429 to one is the create's
/// (counted as compute's); the management network's lookup in a status
/// read does without Neutron, which it asks again after its own pause.
/// Keystone's too: each call needs a token, and a 429 to a renewal inside
/// a boot's call pauses Keystone (no window is halved for it: Nova did
/// not throttle).
pub const REFILL_SERVICES: &[CloudService] = &[CloudService::Compute, CloudService::Identity];

/// A call the cloud throttled, as the gate judges it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThrottledCall {
    /// The API service that answered: its pause holds every call to it
    /// warmpool can hold back, in every AZ (one regional API).
    pub service: CloudService,
    /// A boot's own call (its quota poll, create or status read): a
    /// compute 429 to one halves its AZ's window; a purchase's Cinder,
    /// Neutron or attach call, or a pool's cloud check, does not.
    pub boot: bool,
}

impl ThrottledCall {
    /// A Nova call of a boot's.
    pub const BOOT: Self = Self {
        service: CloudService::Compute,
        boot: true,
    };

    /// A call of `service` (unknown: taken for compute's, the side that
    /// holds refills back) made for a boot (`boot`) or for something else.
    pub fn new(service: Option<CloudService>, boot: bool) -> Self {
        Self {
            service: service.unwrap_or(CloudService::Compute),
            boot,
        }
    }
}

/// Why new boots wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hold {
    /// `service` answered a 429/413 (any AZ's call: one regional API);
    /// new boots of the pool wait until `until` (its own end of the
    /// service's pause).
    Throttled {
        until: Instant,
        service: CloudService,
    },
    /// The cloud refused for quota, or its limits leave no headroom;
    /// speculative boots wait until `until`.
    Quota { until: Instant },
}

impl Hold {
    pub fn until(&self) -> Instant {
        match self {
            Self::Throttled { until, .. } | Self::Quota { until } => *until,
        }
    }
}

/// What an AZ allows now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    /// New gated boots that fit in the window (`u32::MAX` when disabled).
    pub room: u32,
    pub hold: Option<Hold>,
    /// Speculative boots the project's quota still admits, after boots
    /// started since the last poll and purchases waiting for quota; `None`
    /// when unknown or unlimited. Unlike the window this is a hard cap.
    pub headroom: Option<u32>,
}

impl Admission {
    pub const OPEN: Self = Self {
        room: u32::MAX,
        hold: None,
        headroom: None,
    };
}

/// How a boot ended, as far as the gate cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootSignal {
    /// The server became ACTIVE `build` after it was requested.
    Built { build: Duration },
    /// The cloud refused the create (a 400, a deleted image, quota, a 429
    /// to the end): no server, so no quota held and no latency signal.
    Refused,
    /// The server became ACTIVE, its build not timed (seen only after a
    /// retry's pause, made by a create answered in doubt, or resumed): the
    /// quota let it through, but no latency signal.
    Unmeasured,
    /// Failed or taken over: no signal.
    NoSignal,
}

/// One boot the gate knows about; returned by [`Gate::start`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TicketInfo {
    pub id: u64,
    pub az: String,
    pub flavor: String,
    /// Counts against the window (replenisher boots); purchases do not.
    pub gated: bool,
    pub started_at: Instant,
    /// Builds in flight in the AZ when this one started, itself included.
    pub in_flight_at_start: u32,
    /// The window when it started, rounded down.
    pub window_at_start: u32,
    /// Started while a poll of its flavor's limits, sent after the last
    /// quota refusal, lifted the refusal pause: refused, it shows the
    /// polls blind to what refuses.
    pub poll_lifted_pause: bool,
}

/// An AZ's gate, as `GetPool` shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct GateStatus {
    pub enabled: bool,
    /// The AIMD window on the AZ's replenisher builds in flight:
    /// fractional as it grows, and the AZ admits its floor. `None` when
    /// the gate is disabled, as nothing then limits boots to it.
    pub window: Option<f64>,
    /// Builds in flight in the AZ (purchases included).
    pub in_flight: u32,
    /// Of those, replenisher boots (the ones the window limits).
    pub gated_in_flight: u32,
    pub baseline: Option<Duration>,
    /// Smoothed build time / baseline of recent builds.
    pub latency_ratio: Option<f64>,
    pub hold: Option<Hold>,
    /// 429/413 responses seen by calls made for the AZ's boots and
    /// purchases, whatever service answered.
    pub throttled: u64,
    /// Window halvings.
    pub decreases: u64,
    /// Quota refusals seen (all AZs).
    pub quota_refusals: u64,
}

/// A flavor's quota headroom as last polled, as `GetPool` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeadroomStatus {
    /// Servers the quota admitted at the poll (`None`: unlimited).
    pub polled: Option<u64>,
    /// What is left now for speculative boots.
    pub left: Option<u64>,
    pub limited_by: Option<String>,
    /// One server of the flavor needs more than the quota allows in all.
    pub beyond_quota: bool,
    /// When the last poll (successful or not) was made.
    pub polled_at: Option<Instant>,
    /// When the last successful poll read the limits; kept through failed
    /// polls since (see `failing`). `None` before any: with `polled` and
    /// `left` also `None`, what tells "every limit unlimited" from "not
    /// read yet" (or the gate off, which reads none).
    pub read_at: Option<Instant>,
    /// The last poll failed: headroom is unknown, nothing is capped.
    pub failing: Option<String>,
    /// Why the last poll did not count the port quota (the cloud refused
    /// or failed to tell it): `polled` and `left` are the compute quotas'.
    pub ports_unknown: Option<String>,
}

impl Eq for GateStatus {}

#[derive(Clone, Debug)]
struct AzState {
    window: f64,
    ssthresh: f64,
    in_flight: u32,
    gated: u32,
    /// Boots in flight: ticket id -> most boots in flight in the AZ at any
    /// time during its life (how contended it was).
    peaks: BTreeMap<u64, u32>,
    baseline: Option<Duration>,
    baseline_at: Option<Instant>,
    /// EWMA of build time / baseline over recent builds.
    ratio: Option<f64>,
    /// The first boots seen; their median is the baseline until a boot
    /// with few others in flight measures it or it goes stale.
    first: Vec<Duration>,
    low_load_seen: bool,
    recent: VecDeque<Duration>,
    /// When the builds of the last baseline build time ended, oldest first:
    /// how many the cloud delivered per round trip.
    delivered: VecDeque<Instant>,
    /// The last few build time / baseline samples, unsmoothed.
    samples: VecDeque<f64>,
    /// Set while slow start is conservative (latency started to rise).
    css: Option<Css>,
    /// When the episode of compute throttling of the AZ's boots that
    /// halved the window ends: 429s until then halve it no more.
    halved_until: Option<Instant>,
    last_decrease: Option<Instant>,
    /// When the boots in flight first fitted the window again after the last
    /// decrease: only boots started from then on show the smaller window's
    /// latency and may cause another decrease.
    settled_at: Option<Instant>,
    throttled: u64,
    decreases: u64,
}

/// A service's Retry-After pause of new boots (in every AZ).
#[derive(Clone, Debug)]
struct Pause {
    /// When the longest Retry-After named in the episode ends.
    until: Instant,
    /// That Retry-After: what each pool's factor stretches.
    named: Duration,
    /// Per pool (AZ and flavor), the factor in `[1, 1 + jitter]` its
    /// pause is stretched by, drawn when it first asks.
    stretch: BTreeMap<(String, String), f64>,
}

impl Pause {
    /// When the pause of the pool of `flavor` in `az` ends, if after `now`.
    fn end_for(
        &mut self,
        az: &str,
        flavor: &str,
        jitter: f64,
        rng: &mut StdRng,
        now: Instant,
    ) -> Option<Instant> {
        let (until, named) = (self.until, self.named);
        let end = |stretch: f64| deadline_after(until, named.mul_f64(stretch - 1.0));
        // Past the latest end a pool may have: nothing to draw.
        if end(1.0 + jitter) <= now {
            return None;
        }
        let stretch = *self
            .stretch
            .entry((az.to_string(), flavor.to_string()))
            .or_insert_with(|| stretch(rng, jitter));
        Some(end(stretch)).filter(|end| *end > now)
    }
}

/// One purchase of `flavor` more (`up`) or fewer in `by_flavor`.
fn count_purchase(by_flavor: &mut BTreeMap<String, u64>, flavor: &str, up: bool) {
    if up {
        *by_flavor.entry(flavor.to_string()).or_default() += 1;
    } else if let Some(n) = by_flavor.get_mut(flavor) {
        *n -= 1;
        if *n == 0 {
            by_flavor.remove(flavor);
        }
    }
}

/// A factor in `[1, 1 + jitter]` a pause is stretched by.
fn stretch(rng: &mut StdRng, jitter: f64) -> f64 {
    if jitter > 0.0 {
        1.0 + rng.gen_range(0.0..=jitter)
    } else {
        1.0
    }
}

#[derive(Clone, Debug)]
struct QuotaState {
    paused_until: Option<Instant>,
    /// `boots_started.total` when the pause began: a refused boot whose
    /// ticket id is higher started during it.
    paused_at_boot: u64,
    /// `boots_started.total` at the last refusal: a boot whose ticket id
    /// is higher was sent after it. Quota is charged at the create, so
    /// only such a boot reaching ACTIVE says the quota lets boots through
    /// now; one sent before (IOPS-bound builds take minutes) does not.
    refused_at_boot: u64,
    /// A boot started during the pause on a poll that lifted it (a
    /// refill, or a purchase on the room it read) was refused while the
    /// pause lasted: the polls do not see what the cloud refuses (a quota
    /// they do not read, as the port quota when Neutron will not tell it,
    /// or another user of the project taking the room first), so they
    /// lift no pause until a boot sent after the last refusal reaches
    /// ACTIVE or the backoff starts over.
    polls_blind: bool,
    backoff: Duration,
    /// Per flavor: the last poll of the cloud's limits.
    headroom: BTreeMap<String, HeadroomEntry>,
    /// Boots started, ever (every AZ and pool, purchases included), and
    /// those whose create is not answered yet.
    boots_started: BootCount,
    /// Per flavor, purchases waiting for quota to free up: first in line.
    purchases_waiting: BTreeMap<String, u64>,
    /// Per flavor, purchases that found room and have not started their
    /// boot yet (whose ticket then holds the room): the room is theirs, so
    /// purchases that look after them, and refills, find it taken.
    purchases_admitted: BTreeMap<String, u64>,
}

#[derive(Clone, Debug)]
struct HeadroomEntry {
    /// Answer of the last successful poll (`None`: unlimited); `None` as a
    /// whole entry field when no poll has succeeded yet.
    servers: Option<Option<u64>>,
    limited_by: Option<String>,
    beyond_quota: bool,
    /// When the last poll (successful or not) was made.
    polled_at: Instant,
    /// When the last successful poll was made (`None`: none yet).
    read_at: Option<Instant>,
    /// What is left of each limited quota at the last successful poll, and
    /// what one server of the flavor takes of it; empty: only `servers` is
    /// known.
    quotas: Vec<QuotaLeft>,
    /// Of the [`PORTS`] left at the poll, those the unsold instances will
    /// take for their sales: speculative refills leave them.
    sales_ports: u64,
    /// `boots_started` when the last successful poll was sent; a create
    /// of its `unanswered` the cloud refused since is taken out of them.
    boots_at_poll: BootCount,
    /// Per flavor, boots started since the poll whose create the cloud
    /// refused: they hold no quota, so they give back what they took.
    refused_since_poll: BTreeMap<String, u64>,
    /// Why the last poll failed, if it did.
    failing: Option<String>,
    /// Why the last successful poll did not count the port quota.
    ports_unknown: Option<String>,
    /// A refusal since the poll: the cached answer is stale, poll again.
    stale: bool,
}

impl HeadroomEntry {
    /// What of `quota` is kept for the unsold instances' sales.
    fn kept(&self, quota: &QuotaLeft, keep_sales_ports: bool) -> u64 {
        if keep_sales_ports && quota.resource == PORTS {
            self.sales_ports
        } else {
            0
        }
    }

    /// The quota that binds refills at the poll: the cloud's name for it,
    /// unless the ports kept for sales make the port quota bind (the first
    /// of the tightest, as the drivers name it).
    fn refill_limited_by(&self) -> Option<String> {
        if self.sales_ports == 0 || self.beyond_quota {
            return self.limited_by.clone();
        }
        let fits = |q: &QuotaLeft| {
            let left = q.left.saturating_sub(self.kept(q, true));
            left.checked_div(q.per_server).unwrap_or(u64::MAX)
        };
        match self.quotas.iter().min_by_key(|q| fits(q)) {
            Some(ports) if ports.resource == PORTS => Some(format!(
                "ports: {} left, {} kept for the sales of unsold servers",
                ports.left, self.sales_ports
            )),
            _ => self.limited_by.clone(),
        }
    }
}

/// Ports of the project's quota a pool instance in `state` will yet take
/// beyond what Neutron counts now: an unsold one takes the tenant's port
/// when sold, and a booting one may not have its own yet (Nova makes it in
/// nova-compute, after scheduling), so it keeps that one too.
pub fn ports_kept_for_sale(state: InstanceState) -> u64 {
    match state {
        InstanceState::Booting => 2,
        InstanceState::Warming | InstanceState::Ready => 1,
        _ => 0,
    }
}

/// Boots started, in all and per flavor, and those whose create the
/// cloud has not answered (and purchases' tenant ports made), as
/// [`Gate::boots_started`] reads them when a headroom poll is sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootCount {
    /// Ticket ids count it: a ticket with a higher id started after.
    total: u64,
    by_flavor: BTreeMap<String, u64>,
    /// By ticket id, boots whose create the cloud has not answered yet:
    /// the cloud's count does not hold them.
    unanswered: BTreeMap<u64, Unanswered>,
    /// Tenant ports purchases made ([`Gate::tenant_port_made`]): a poll
    /// sent at n counts the first n.
    tenant_ports: u64,
    /// Servers of the project seen gone ([`Gate::server_freed`]): a poll
    /// sent at n may not show the room of those after the first n.
    freed: u64,
    /// Quota refusals seen ([`Gate::quota_exceeded`]): a poll sent at n
    /// was sent after the first n, and one sent after the last lifts the
    /// refusal pause for its flavor.
    refusals: u64,
}

/// A boot whose create the cloud has not answered yet.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Unanswered {
    flavor: String,
    /// Its instance is recorded, so a poll's count of the ports kept for
    /// sale ([`ports_kept_for_sale`], read after the gate's count) holds
    /// its ports already: refills, which leave those, count none for it;
    /// a purchase, which does not, counts its management port.
    recorded: bool,
}

impl BootCount {
    /// Boots of `flavor` started since `earlier` was read.
    fn since(&self, earlier: &BootCount, flavor: &str) -> u64 {
        let at = earlier.by_flavor.get(flavor).copied().unwrap_or(0);
        self.by_flavor
            .get(flavor)
            .copied()
            .unwrap_or(0)
            .saturating_sub(at)
    }
}

/// Conservative slow start, after latency started to rise.
#[derive(Clone, Copy, Debug)]
struct Css {
    /// The lowest latency ratio among the builds before it began.
    baseline: f64,
    rounds_left: u32,
    /// Builds until the current round ends (a window's worth).
    builds_left: u32,
    round_min: f64,
}

/// The throttle gate of one manager: one state per AZ, the Retry-After
/// pauses per API service, and the quota state.
#[derive(Clone, Debug)]
pub struct Gate {
    settings: GateSettings,
    azs: BTreeMap<String, AzState>,
    /// Per API service, its Retry-After pause: the service is one API
    /// for every AZ, so a 429 in one zone is every zone's to wait out.
    pauses: BTreeMap<CloudService, Pause>,
    quota: QuotaState,
    rng: StdRng,
}

impl Gate {
    pub fn new(settings: GateSettings) -> Self {
        Self {
            rng: StdRng::seed_from_u64(settings.seed),
            quota: QuotaState {
                paused_until: None,
                paused_at_boot: 0,
                refused_at_boot: 0,
                polls_blind: false,
                backoff: settings.quota_backoff,
                headroom: BTreeMap::new(),
                boots_started: BootCount::default(),
                purchases_waiting: BTreeMap::new(),
                purchases_admitted: BTreeMap::new(),
            },
            azs: BTreeMap::new(),
            pauses: BTreeMap::new(),
            settings,
        }
    }

    pub fn settings(&self) -> &GateSettings {
        &self.settings
    }

    fn az(&mut self, az: &str) -> &mut AzState {
        let s = &self.settings;
        let initial = f64::from(
            s.initial_window
                .clamp(s.min_window.max(1), s.max_window.max(1)),
        );
        let max = f64::from(s.max_window.max(1));
        self.azs.entry(az.to_string()).or_insert_with(|| AzState {
            window: initial,
            ssthresh: max,
            in_flight: 0,
            gated: 0,
            peaks: BTreeMap::new(),
            baseline: None,
            baseline_at: None,
            ratio: None,
            first: Vec::new(),
            low_load_seen: false,
            recent: VecDeque::new(),
            delivered: VecDeque::new(),
            samples: VecDeque::new(),
            css: None,
            halved_until: None,
            last_decrease: None,
            settled_at: None,
            throttled: 0,
            decreases: 0,
        })
    }

    /// The hold on speculative boots of `flavor` in `az`, given the
    /// flavor's [`Self::refill_headroom`].
    fn hold(
        &mut self,
        az: &str,
        flavor: &str,
        refill_headroom: Option<u64>,
        now: Instant,
    ) -> Option<Hold> {
        if let Some(until) = self.quota.paused_until.filter(|u| *u > now) {
            if !self.quota_read_since_refusal(flavor) {
                return Some(Hold::Quota { until });
            }
        }
        let throttled = self
            .paused_until(REFILL_SERVICES, az, flavor, now)
            .map(|(until, service)| Hold::Throttled { until, service });
        if throttled.is_none() && refill_headroom == Some(0) {
            // Nothing to boot until the next poll can show freed quota. A
            // poll that is due holds nothing: only a pool that wants boots
            // polls (before it boots), so a hold kept past it would show a
            // pool at its target paused, by a pause over, for good.
            let due = self.headroom_due_at(flavor, now);
            if due > now {
                return Some(Hold::Quota { until: due });
            }
        }
        throttled
    }

    /// Whether a poll of `flavor`'s limits sent after the last quota
    /// refusal read them: the refusal pause is for a quota whose headroom
    /// cannot be read, so the cap that poll read holds the flavor's
    /// refills instead (none left: until the next poll). Not a poll that
    /// failed since, nor one that found the quota unlimited, nor while
    /// the polls are blind to what the cloud refuses.
    fn quota_read_since_refusal(&self, flavor: &str) -> bool {
        let q = &self.quota;
        !q.polls_blind
            && q.headroom.get(flavor).is_some_and(|e| {
                matches!(e.servers, Some(Some(_)))
                    && e.boots_at_poll.refusals >= q.boots_started.refusals
            })
    }

    /// What the AZ allows now for speculative boots of `flavor`.
    pub fn admission(&mut self, az: &str, flavor: &str, now: Instant) -> Admission {
        if !self.settings.enabled {
            return Admission::OPEN;
        }
        let headroom = self.refill_headroom(flavor);
        let hold = self.hold(az, flavor, headroom, now);
        let state = self.az(az);
        let room = (state.window.floor() as u32).saturating_sub(state.gated);
        Admission {
            room,
            hold,
            headroom: headroom.map(|h| u32::try_from(h).unwrap_or(u32::MAX)),
        }
    }

    /// Whether `flavor`'s quota headroom should be polled now: never polled,
    /// polled `headroom_interval` ago, or stale since the last poll (a
    /// refusal).
    pub fn headroom_due(&self, flavor: &str, now: Instant) -> bool {
        self.settings.enabled && self.headroom_due_at(flavor, now) <= now
    }

    /// Whether a refill of `flavor` in `az` should poll the quota headroom
    /// now: it is due ([`Self::headroom_due`]) and Nova is not waiting
    /// out a throttle. A poll then would only add a call to the storm, and
    /// the refills it would be for are held until the pause is over.
    pub fn refill_poll_due(&mut self, az: &str, flavor: &str, now: Instant) -> bool {
        self.headroom_due(flavor, now) && self.throttled_until(az, flavor, now).is_none()
    }

    /// When a purchase waiting for `flavor`'s quota in `az` should poll the
    /// headroom again (`now` if at once): when refills would
    /// ([`Self::headroom_due_at`]), or at once once a server was seen gone
    /// since the last poll was sent, whose answer may not show its room
    /// (the refills wait for their poll: none waits on them); never while
    /// Nova's throttle pause holds the pool.
    pub fn purchase_poll_at(&mut self, az: &str, flavor: &str, now: Instant) -> Instant {
        let freed = self.quota.boots_started.freed;
        let due = match self.quota.headroom.get(flavor) {
            Some(e) if e.boots_at_poll.freed < freed => now,
            _ => self.headroom_due_at(flavor, now),
        };
        self.throttled_until(az, flavor, now)
            .map_or(due, |until| due.max(until))
    }

    /// When the throttle pause that holds refills ([`REFILL_SERVICES`])
    /// ends for the pool of `flavor` in `az` (each pool drawn its own
    /// stretch, as their admissions are), if it holds at `now`.
    pub fn throttled_until(&mut self, az: &str, flavor: &str, now: Instant) -> Option<Instant> {
        self.paused_until(REFILL_SERVICES, az, flavor, now)
            .map(|(until, _)| until)
    }

    /// When the last of `services`' throttle pauses ends for the pool of
    /// `flavor` in `az`, and whose it is, if one holds at `now`: what a
    /// pool's calls to those services wait out.
    pub fn paused_until(
        &mut self,
        services: &[CloudService],
        az: &str,
        flavor: &str,
        now: Instant,
    ) -> Option<(Instant, CloudService)> {
        if !self.settings.enabled {
            return None;
        }
        let jitter = self.jitter();
        let mut last: Option<(Instant, CloudService)> = None;
        for service in services {
            let end = self
                .pauses
                .get_mut(service)
                .and_then(|pause| pause.end_for(az, flavor, jitter, &mut self.rng, now));
            if let Some(end) = end.filter(|end| last.is_none_or(|(l, _)| *end > l)) {
                last = Some((end, *service));
            }
        }
        last
    }

    /// When `flavor`'s quota headroom is next due to be polled (`now` if it
    /// is due already).
    pub fn headroom_due_at(&self, flavor: &str, now: Instant) -> Instant {
        match self.quota.headroom.get(flavor) {
            None => now,
            Some(e) if e.stale => now,
            Some(e) => deadline_after(e.polled_at, self.settings.headroom_interval),
        }
    }

    /// Boots started so far (every AZ, purchases included), and those whose
    /// create is not answered yet: read before a headroom poll is sent (and
    /// before its count of the ports kept for sale), for
    /// [`Self::headroom_polled`].
    pub fn boots_started(&self) -> BootCount {
        self.quota.boots_started.clone()
    }

    /// The cloud's limits for `flavor`, polled at `now` by a request sent
    /// when [`Self::boots_started`] read `boots_at_send`. Boots started
    /// since the request was sent, and those started before whose create
    /// was not answered then, are taken from the answer's headroom: the
    /// cloud may not have counted them. `sales_ports`: the ports the
    /// unsold instances will take ([`ports_kept_for_sale`]), counted before
    /// the request was sent; refills leave them, purchases do not.
    pub fn headroom_polled(
        &mut self,
        flavor: &str,
        boots_at_send: BootCount,
        headroom: BootHeadroom,
        sales_ports: u64,
        now: Instant,
    ) {
        self.quota.headroom.insert(
            flavor.to_string(),
            HeadroomEntry {
                servers: Some(headroom.servers),
                limited_by: headroom.limited_by,
                beyond_quota: headroom.beyond_quota,
                quotas: headroom.quotas,
                sales_ports,
                polled_at: now,
                read_at: Some(now),
                boots_at_poll: boots_at_send,
                refused_since_poll: BTreeMap::new(),
                failing: None,
                ports_unknown: headroom.ports_unknown.map(text::capped),
                stale: false,
            },
        );
    }

    /// Whether `flavor`'s last poll of the limits failed: a failing one is
    /// warned of once per outage, not at every poll.
    pub fn headroom_failing(&self, flavor: &str) -> bool {
        self.quota
            .headroom
            .get(flavor)
            .is_some_and(|e| e.failing.is_some())
    }

    /// Whether a quota refusal since `flavor`'s last poll made its reading
    /// stale: the room it shows may be gone, so a purchase reads the
    /// limits again before it boots on it ([`Self::purchase_poll_at`]).
    pub fn headroom_stale(&self, flavor: &str) -> bool {
        self.quota.headroom.get(flavor).is_some_and(|e| e.stale)
    }

    /// Polling `flavor`'s limits failed at `now`: headroom is unknown (no
    /// cap; refusals still pause) until a poll succeeds, tried again after
    /// `headroom_interval`.
    pub fn headroom_failed(&mut self, flavor: &str, error: String, now: Instant) {
        let entry = self
            .quota
            .headroom
            .entry(flavor.to_string())
            .or_insert_with(|| HeadroomEntry {
                servers: None,
                limited_by: None,
                beyond_quota: false,
                quotas: Vec::new(),
                sales_ports: 0,
                polled_at: now,
                read_at: None,
                boots_at_poll: BootCount::default(),
                refused_since_poll: BTreeMap::new(),
                failing: None,
                ports_unknown: None,
                stale: false,
            });
        entry.servers = None;
        entry.beyond_quota = false;
        // The last poll's binding quota, the ports it kept for sales and
        // why it did not count them would read as now; its `quotas` stay
        // for what one server of this flavor takes (`per_server`), which
        // other flavors' headroom counts its boots by.
        entry.limited_by = None;
        entry.sales_ports = 0;
        entry.ports_unknown = None;
        entry.polled_at = now;
        entry.failing = Some(text::capped(error));
        entry.stale = false;
    }

    /// Servers of `flavor` the quota admits now by the last poll, minus what
    /// the boots started since hold; `None` when unknown or unlimited. What
    /// a purchase judges: it takes ports kept for other servers' sales.
    pub fn headroom_left(&self, flavor: &str) -> Option<u64> {
        self.purchase_headroom(flavor, None)
    }

    /// As [`Self::headroom_left`], for a purchase that made its tenant's
    /// port already: `port`, the number [`Self::tenant_port_made`] gave it.
    /// Its server then needs one port more, not the two a server takes; so
    /// judged only on a poll sent after the port was made, whose count of
    /// the ports holds it (an earlier poll's does not, and the server's
    /// two make up for it).
    pub fn purchase_headroom(&self, flavor: &str, port: Option<u64>) -> Option<u64> {
        let counted = self
            .quota
            .headroom
            .get(flavor)
            .zip(port)
            .is_some_and(|(entry, port)| port <= entry.boots_at_poll.tenant_ports);
        self.headroom_after(flavor, &[&self.quota.purchases_admitted], false, counted)
    }

    /// A purchase made its tenant's port (in warmpool's project: Neutron's
    /// count of the port quota holds it from now on). Returns its number,
    /// for [`Self::purchase_headroom`].
    pub fn tenant_port_made(&mut self) -> u64 {
        let ports = &mut self.quota.boots_started.tenant_ports;
        *ports += 1;
        *ports
    }

    /// As [`Self::headroom_left`], less what purchases waiting for quota
    /// are kept and the ports the unsold instances' sales will take: what
    /// speculative boots may take.
    fn refill_headroom(&self, flavor: &str) -> Option<u64> {
        let q = &self.quota;
        self.headroom_after(
            flavor,
            &[&q.purchases_waiting, &q.purchases_admitted],
            true,
            false,
        )
    }

    /// As [`Self::headroom_left`], with `reserved` servers per flavor (of
    /// purchases waiting or admitted) also taken, the ports kept for sales when
    /// `keep_sales_ports`, and one port of those the poll counted as used
    /// given back when `own_port_counted` (a purchase's tenant port, which
    /// its server's share holds too).
    fn headroom_after(
        &self,
        flavor: &str,
        reserved: &[&BTreeMap<String, u64>],
        keep_sales_ports: bool,
        own_port_counted: bool,
    ) -> Option<u64> {
        let entry = self.quota.headroom.get(flavor)?;
        let servers = entry.servers??;
        let started = &self.quota.boots_started;
        // Per flavor, the boots that may hold quota the poll's answer does
        // not show: started since it was sent, unanswered when it was
        // sent, and `reserved`. Each with the ports it takes when not a
        // server's share: a recorded unanswered boot's two are among the
        // ports kept for sale, which refills leave; a purchase does not
        // leave those, so it leaves the boot's management port, which
        // Nova has not made yet.
        let recorded_ports = u64::from(!keep_sales_ports);
        let since = started.by_flavor.keys().map(|booted| {
            let refused = entry.refused_since_poll.get(booted).copied();
            let n = started.since(&entry.boots_at_poll, booted);
            (
                booted.as_str(),
                n.saturating_sub(refused.unwrap_or(0)),
                None,
            )
        });
        let unanswered = entry.boots_at_poll.unanswered.values().map(|u| {
            let ports = u.recorded.then_some(recorded_ports);
            (u.flavor.as_str(), 1, ports)
        });
        let holding: Vec<(&str, u64, Option<u64>)> = since
            .chain(unanswered)
            .chain(
                reserved
                    .iter()
                    .flat_map(|by_flavor| by_flavor.iter())
                    .map(|(f, n)| (f.as_str(), *n, None)),
            )
            .filter(|(_, n, _)| *n > 0)
            .collect();
        if entry.quotas.is_empty() {
            let servers_held = holding
                .iter()
                .fold(0u64, |sum, (_, n, _)| sum.saturating_add(*n));
            return Some(servers.saturating_sub(servers_held));
        }
        entry
            .quotas
            .iter()
            .map(|quota| {
                let taken = holding.iter().fold(0u64, |sum, (booted, n, ports)| {
                    let each = match ports {
                        Some(ports) if quota.resource == PORTS => *ports,
                        _ => self.per_server(booted, flavor, quota),
                    };
                    sum.saturating_add(n.saturating_mul(each))
                });
                let own_port = u64::from(own_port_counted && quota.resource == PORTS);
                let left = quota
                    .left
                    .saturating_add(own_port)
                    .saturating_sub(taken)
                    .saturating_sub(entry.kept(quota, keep_sales_ports));
                left.checked_div(quota.per_server).unwrap_or(u64::MAX)
            })
            .min()
    }

    /// What one server of `booted` takes of `quota`, polled for `polled`:
    /// by `booted`'s own last poll, else as much as one of `polled`.
    fn per_server(&self, booted: &str, polled: &str, quota: &QuotaLeft) -> u64 {
        if booted == polled {
            return quota.per_server;
        }
        self.quota
            .headroom
            .get(booted)
            .and_then(|e| e.quotas.iter().find(|q| q.resource == quota.resource))
            .map_or(quota.per_server, |q| q.per_server)
    }

    pub fn headroom_status(&self, flavor: &str) -> HeadroomStatus {
        match self.quota.headroom.get(flavor) {
            None => HeadroomStatus {
                polled: None,
                left: None,
                limited_by: None,
                beyond_quota: false,
                polled_at: None,
                read_at: None,
                failing: None,
                ports_unknown: None,
            },
            Some(e) => HeadroomStatus {
                polled: e.servers.flatten(),
                left: self.refill_headroom(flavor),
                limited_by: e.refill_limited_by(),
                beyond_quota: e.beyond_quota,
                polled_at: Some(e.polled_at),
                read_at: e.read_at,
                failing: e.failing.clone(),
                ports_unknown: e.ports_unknown.clone(),
            },
        }
    }

    /// The quota that bound `flavor` at its last successful poll, as the
    /// cloud counted it ("instances: 10 of 10 used"): what a purchase that
    /// finds no room is told. Unlike [`HeadroomStatus::limited_by`], not
    /// the ports kept for sales, which purchases do not leave.
    pub fn purchase_limited_by(&self, flavor: &str) -> Option<String> {
        self.quota.headroom.get(flavor)?.limited_by.clone()
    }

    /// A purchase of `flavor` waits for quota (`true`) or stops waiting
    /// (`false`). While it waits, speculative refills of every flavor leave
    /// it what one server of its flavor takes.
    pub fn purchase_waiting(&mut self, flavor: &str, waiting: bool) {
        count_purchase(&mut self.quota.purchases_waiting, flavor, waiting);
    }

    /// A purchase of `flavor` found room for its cold boot (`true`), or
    /// started that boot, whose ticket holds the room from then on, or
    /// gave up (`false`). Found under the lock that admits it, so that two
    /// purchases, or a purchase and a refill, never take the same room.
    pub fn purchase_admitted(&mut self, flavor: &str, admitted: bool) {
        count_purchase(&mut self.quota.purchases_admitted, flavor, admitted);
    }

    /// Whether any purchase waits for quota: servers freed then are worth
    /// watching until gone ([`Self::server_freed`]).
    pub fn purchases_waiting(&self) -> bool {
        !self.quota.purchases_waiting.is_empty()
    }

    /// The pause before retrying a call the cloud answered 429/413:
    /// Retry-After (or the default, for none or a zero one, which names no
    /// wait) stretched by the seeded jitter. At least [`MIN_RETRY_PAUSE`]
    /// and never more than twice [`MAX_RETRY_AFTER`], whatever the cloud
    /// sent.
    pub fn retry_pause(&mut self, retry_after: Option<Duration>) -> Duration {
        let jitter = self.jitter();
        self.named_pause(retry_after)
            .mul_f64(stretch(&mut self.rng, jitter))
    }

    /// The pause a 429/413's Retry-After names, before jitter: it, or the
    /// default for none or a zero one, within [`MIN_RETRY_PAUSE`] and
    /// [`MAX_RETRY_AFTER`].
    fn named_pause(&self, retry_after: Option<Duration>) -> Duration {
        retry_after
            .filter(|after| !after.is_zero())
            .unwrap_or(self.settings.default_retry_after)
            .clamp(MIN_RETRY_PAUSE, MAX_RETRY_AFTER)
    }

    /// The jitter setting, within `[0, 1]`.
    fn jitter(&self) -> f64 {
        // NaN fails the guard (`clamp` would keep it and `gen_range` panic).
        match self.settings.retry_after_jitter {
            j if j > 0.0 => j.min(1.0),
            _ => 0.0,
        }
    }

    /// A boot of `flavor` starts in `az`; `gated` when the replenisher
    /// starts it, before it records the boot's instance ([`Self::recorded`]);
    /// a purchase's or a resumed boot's instance is recorded already.
    pub fn start(&mut self, az: &str, flavor: &str, gated: bool, now: Instant) -> TicketInfo {
        let poll_lifted_pause = self.quota.paused_until.is_some_and(|u| u > now)
            && self.quota_read_since_refusal(flavor);
        let started = &mut self.quota.boots_started;
        started.total += 1;
        *started.by_flavor.entry(flavor.to_string()).or_default() += 1;
        // Ticket ids count boots started: a poll sent at `total` = n counts
        // the tickets up to id n.
        let id = started.total;
        started.unanswered.insert(
            id,
            Unanswered {
                flavor: flavor.to_string(),
                recorded: !gated,
            },
        );
        let state = self.az(az);
        state.in_flight += 1;
        if gated {
            state.gated += 1;
        }
        let in_flight = state.in_flight;
        for peak in state.peaks.values_mut() {
            *peak = (*peak).max(in_flight);
        }
        state.peaks.insert(id, in_flight);
        TicketInfo {
            id,
            az: az.to_string(),
            flavor: flavor.to_string(),
            gated,
            started_at: now,
            in_flight_at_start: state.in_flight,
            window_at_start: state.window.floor() as u32,
            poll_lifted_pause,
        }
    }

    /// The boot's instance is recorded: a poll's count of the ports kept
    /// for sale sees it from now on.
    pub fn recorded(&mut self, ticket: &TicketInfo) {
        if let Some(u) = self.quota.boots_started.unanswered.get_mut(&ticket.id) {
            u.recorded = true;
        }
    }

    /// The cloud answered the boot's create with a server (or the boot
    /// has one already): the cloud's count holds it from now on.
    pub fn create_answered(&mut self, ticket: &TicketInfo) {
        self.quota.boots_started.unanswered.remove(&ticket.id);
    }

    /// A boot ended.
    pub fn finish(&mut self, ticket: &TicketInfo, signal: BootSignal, now: Instant) {
        self.quota.boots_started.unanswered.remove(&ticket.id);
        let settings = self.settings.clone();
        let state = self.az(&ticket.az);
        let Some(peak) = state.peaks.remove(&ticket.id) else {
            return; // finished twice
        };
        state.in_flight = state.in_flight.saturating_sub(1);
        if ticket.gated {
            state.gated = state.gated.saturating_sub(1);
        }
        settle(state, now);
        if signal == BootSignal::Refused {
            // Ticket ids count `boots_started`: a boot the poll's answer
            // did not hold was taken from it, and is given back.
            for entry in self.quota.headroom.values_mut() {
                if ticket.id > entry.boots_at_poll.total {
                    *entry
                        .refused_since_poll
                        .entry(ticket.flavor.clone())
                        .or_default() += 1;
                } else {
                    entry.boots_at_poll.unanswered.remove(&ticket.id);
                }
            }
        }
        if matches!(signal, BootSignal::Built { .. } | BootSignal::Unmeasured)
            && ticket.id > self.quota.refused_at_boot
        {
            // A boot sent after the last refusal got through: quota is not
            // refusing (any more). One sent before was charged before.
            self.quota.backoff = settings.quota_backoff;
            self.quota.polls_blind = false;
        }
        let BootSignal::Built { build } = signal else {
            return;
        };
        if !settings.enabled {
            return;
        }
        let state = self.az(&ticket.az);
        observe_build(state, &settings, ticket, peak, build, now);
    }

    /// `call.service` answered 429/413 to a call made for a boot or a
    /// purchase in `az`. The service is one API for every AZ: calls to it
    /// that the gate holds (refills', [`REFILL_SERVICES`]) wait out the
    /// Retry-After in every AZ, each pool's stretched by its own factor
    /// (drawn once per pause), so they do not come back together. A
    /// compute 429 to a boot's own call also halves `az`'s window, once
    /// per throttling episode: builds contend for the AZ's hosts, and a
    /// purchase's Cinder or Neutron 429 says nothing of them.
    pub fn throttled(
        &mut self,
        az: &str,
        call: ThrottledCall,
        retry_after: Option<Duration>,
        now: Instant,
    ) {
        if !self.settings.enabled {
            return;
        }
        let named = self.named_pause(retry_after);
        let until = deadline_after(now, named);
        match self.pauses.get_mut(&call.service) {
            // The same episode: a longer wait named extends it; the
            // factors drawn stay.
            Some(pause) if pause.until > now => {
                if until > pause.until {
                    pause.until = until;
                    pause.named = named;
                }
            }
            _ => {
                let pause = Pause {
                    until,
                    named,
                    stretch: BTreeMap::new(),
                };
                self.pauses.insert(call.service, pause);
            }
        }
        let min_window = f64::from(self.settings.min_window.max(1));
        let state = self.az(az);
        state.throttled += 1;
        if !(call.boot && call.service == CloudService::Compute) {
            return;
        }
        match &mut state.halved_until {
            Some(episode) if *episode > now => *episode = (*episode).max(until),
            _ => {
                state.halved_until = Some(until);
                decrease(state, min_window, now);
            }
        }
    }

    /// A server of the project was seen gone (a release's, a failed
    /// try's, one warmpool deleted while a purchase waited): the quota it
    /// held is free, and each flavor's headroom polled before it understates
    /// the room, so a purchase waiting for quota polls again at its next
    /// look ([`Self::purchase_poll_at`]) and gets the room now, not at the
    /// next poll. Quota is the project's: any flavor's server frees room
    /// for every flavor. Counted, not marked on the readings: a poll sent
    /// before and answered after does not show the room either.
    pub fn server_freed(&mut self) {
        self.quota.boots_started.freed += 1;
    }

    /// The cloud refused `boot` for quota.
    pub fn quota_exceeded(&mut self, boot: &TicketInfo, now: Instant) {
        if !self.settings.enabled {
            return;
        }
        let max = self
            .settings
            .quota_backoff_max
            .max(self.settings.quota_backoff);
        let q = &mut self.quota;
        q.boots_started.refusals += 1;
        q.refused_at_boot = q.boots_started.total;
        // The cached headroom was wrong (someone else used quota): poll again.
        for entry in q.headroom.values_mut() {
            entry.stale = true;
        }
        match q.paused_until {
            // Boots refused together (started before the pause) are one
            // episode: the pause begins and its backoff doubles once. One
            // started during it on a poll that lifted it: the polls do not
            // see this refusal's quota, and would lift the pause again at
            // every refusal. (A purchase booted while the limits could not
            // be read says nothing of them.)
            Some(until) if until > now => {
                if boot.id > q.paused_at_boot && boot.poll_lifted_pause {
                    q.polls_blind = true;
                }
            }
            last => {
                // A refusal long after the last pause ended begins a new
                // spell: the backoff doubles while the cloud keeps
                // refusing, not for good.
                if last.is_some_and(|until| now.saturating_duration_since(until) > max) {
                    q.backoff = self.settings.quota_backoff;
                    q.polls_blind = false;
                }
                q.paused_until = Some(deadline_after(now, q.backoff));
                q.paused_at_boot = q.boots_started.total;
                q.backoff = q.backoff.saturating_mul(2).min(max);
            }
        }
    }

    /// The AZ's gate as a pool of `flavor` there sees it: held as its
    /// admission is.
    pub fn status(&mut self, az: &str, flavor: &str, now: Instant) -> GateStatus {
        let enabled = self.settings.enabled;
        let hold = if enabled {
            self.hold(az, flavor, self.refill_headroom(flavor), now)
        } else {
            None
        };
        let refusals = self.quota.boots_started.refusals;
        let state = self.az(az);
        GateStatus {
            enabled,
            window: enabled.then_some(state.window),
            in_flight: state.in_flight,
            gated_in_flight: state.gated,
            baseline: state.baseline,
            latency_ratio: state.ratio,
            hold,
            throttled: state.throttled,
            decreases: state.decreases,
            quota_refusals: refusals,
        }
    }
}

fn observe_build(
    state: &mut AzState,
    settings: &GateSettings,
    ticket: &TicketInfo,
    peak: u32,
    build: Duration,
    now: Instant,
) {
    state.recent.push_back(build);
    while state.recent.len() > RECENT {
        state.recent.pop_front();
    }
    state.delivered.push_back(now);
    let low_load = peak <= settings.baseline_max_in_flight.max(1);
    let rebase = |state: &mut AzState, new: Duration| {
        // The smoothed ratio is relative to the baseline: keep it meaning
        // the same build times.
        if let (Some(old), Some(r)) = (state.baseline, state.ratio) {
            state.ratio = Some(r * old.as_secs_f64() / new.as_secs_f64().max(1e-3));
        }
        state.baseline = Some(new);
        state.baseline_at = Some(now);
    };
    let among_first = state.first.len() < RECENT;
    if among_first {
        state.first.push(build);
    }
    match state.baseline {
        Some(baseline) if low_load && state.low_load_seen => {
            // Smooth over jitter, but follow a changed cloud within a few boots.
            rebase(state, baseline.mul_f64(0.5) + build.mul_f64(0.5));
        }
        _ if low_load => {
            state.low_load_seen = true;
            rebase(state, build);
        }
        _ if !state.low_load_seen && among_first => {
            // No uncontended boot seen yet: the median of the first boots
            // (robust to one lucky or unlucky boot). Only while they come
            // in: re-taken at every later build, the median would never be
            // stale, and an AZ that is never quiet would keep it for good.
            let mut first = state.first.clone();
            first.sort_unstable();
            rebase(state, first[(first.len() - 1) / 2]);
        }
        None => unreachable!("a baseline exists once any boot was seen"),
        Some(baseline) => {
            let stale = state
                .baseline_at
                .is_none_or(|at| now.saturating_duration_since(at) >= settings.baseline_ttl);
            let fastest = state.recent.iter().min().copied().unwrap_or(build);
            if stale
                && state.recent.len() >= RECENT
                && fastest.as_secs_f64() > baseline.as_secs_f64() * settings.shrink_above
            {
                rebase(state, fastest);
            }
        }
    }
    let baseline_dur = state.baseline.expect("set above");
    let baseline = baseline_dur.as_secs_f64().max(1e-3);
    while state
        .delivered
        .front()
        .is_some_and(|at| now.saturating_duration_since(*at) > baseline_dur)
    {
        state.delivered.pop_front();
    }
    let sample = build.as_secs_f64() / baseline;
    let ratio = match state.ratio {
        Some(r) => r + RATIO_SMOOTHING * (sample - r),
        None => sample,
    };
    state.ratio = Some(ratio);
    state.samples.push_back(sample);
    while state.samples.len() > RECENT {
        state.samples.pop_front();
    }
    let min_window = f64::from(settings.min_window.max(1));
    let max_window = f64::from(settings.max_window.max(1));
    if ratio > settings.shrink_above && sample > settings.shrink_above {
        let shows_current_window = match (state.last_decrease, state.settled_at) {
            (None, _) => true,
            (Some(_), Some(settled)) => ticket.started_at >= settled,
            (Some(_), None) => false,
        };
        if shows_current_window {
            // Never below what the cloud just delivered per round trip: a
            // smaller window would carry fewer builds than the hosts finish,
            // and only a window above it queues (Little's law). A window
            // already at the floor is not what queues the builds, so it is
            // no decrease: not counted, and slow start goes on.
            let floor = min_window.max(state.delivered.len() as f64);
            if floor < state.window {
                decrease(state, floor, now);
            }
        }
    } else if ratio > settings.shrink_above {
        // Recent boots were slow, this one was not: wait for more.
    } else {
        conservative_rounds(state, sample);
        let slow_start = state.window < state.ssthresh;
        let rising = ratio > settings.grow_below || sample > settings.grow_below;
        if slow_start && state.css.is_none() && rising {
            // Latency starts to rise: grow more slowly for a few rounds before
            // settling (the signal lags one build behind the window, and one
            // jittery build should not end slow start for good).
            let round_min = state.samples.iter().copied().fold(f64::INFINITY, f64::min);
            state.css = Some(Css {
                baseline: round_min,
                rounds_left: CSS_ROUNDS,
                builds_left: state.window.ceil() as u32,
                round_min: f64::INFINITY,
            });
        } else if ratio <= settings.grow_below {
            // Only a window in use is evidence that a larger one is fine.
            let used = 2 * peak >= ticket.window_at_start;
            if used {
                let step = if !slow_start {
                    1.0 / state.window
                } else if state.css.is_some() {
                    1.0 / CSS_GROWTH_DIVISOR
                } else {
                    1.0
                };
                state.window = (state.window + step).min(max_window);
            }
        }
    }
}

/// Counts a build toward the conservative slow start's round; at the end of
/// a round, a round faster than the one that ended slow start shows that
/// exit was spurious (slow start resumes), and after `CSS_ROUNDS` rounds
/// congestion avoidance begins (RFC 9406's HyStart++, with builds as rounds).
fn conservative_rounds(state: &mut AzState, sample: f64) {
    let window = state.window;
    let Some(css) = state.css.as_mut() else {
        return;
    };
    css.round_min = css.round_min.min(sample);
    css.builds_left = css.builds_left.saturating_sub(1);
    if css.builds_left > 0 {
        return;
    }
    if css.round_min < css.baseline {
        state.css = None;
    } else if css.rounds_left <= 1 {
        state.css = None;
        state.ssthresh = window;
    } else {
        css.rounds_left -= 1;
        css.builds_left = window.ceil() as u32;
        css.round_min = f64::INFINITY;
    }
}

/// Halves the window (not below `floor`, never up) and waits for the boots
/// in flight to fit it.
fn decrease(state: &mut AzState, floor: f64, now: Instant) {
    state.window = (state.window / 2.0).max(floor).min(state.window);
    state.ssthresh = state.window;
    state.css = None;
    state.last_decrease = Some(now);
    state.settled_at = None;
    state.decreases += 1;
    settle(state, now);
}

/// Notes when the replenisher's boots in flight fit the window again.
fn settle(state: &mut AzState, now: Instant) {
    if state.last_decrease.is_some()
        && state.settled_at.is_none()
        && f64::from(state.gated) <= state.window.floor()
    {
        state.settled_at = Some(now);
    }
}

/// A boot registered with the gate; reports its end exactly once, also when
/// the boot's future is dropped (a purchase deadline, shutdown).
pub(crate) struct BootTicket {
    gate: Arc<Mutex<Gate>>,
    info: Option<TicketInfo>,
}

impl BootTicket {
    pub fn start(gate: &Arc<Mutex<Gate>>, az: &str, flavor: &str, gated: bool) -> Self {
        Self::start_locked(gate, &mut lock(gate), az, flavor, gated)
    }

    /// As [`Self::start`], with `gate` already locked as `locked`: a caller
    /// that read the admission under the same lock reserves what it read.
    pub fn start_locked(
        gate: &Arc<Mutex<Gate>>,
        locked: &mut Gate,
        az: &str,
        flavor: &str,
        gated: bool,
    ) -> Self {
        let info = locked.start(az, flavor, gated, Instant::now());
        Self {
            gate: gate.clone(),
            info: Some(info),
        }
    }

    /// The boot as the gate knows it; `None` once finished.
    pub fn info(&self) -> Option<&TicketInfo> {
        self.info.as_ref()
    }

    /// The boot's instance is recorded (a replenisher's boot: its ticket
    /// started before).
    pub fn recorded(&self) {
        if let Some(info) = &self.info {
            lock(&self.gate).recorded(info);
        }
    }

    /// The cloud answered the boot's create with a server, or the boot
    /// resumed has one.
    pub fn create_answered(&self) {
        if let Some(info) = &self.info {
            lock(&self.gate).create_answered(info);
        }
    }

    pub fn finish(mut self, signal: BootSignal) {
        if let Some(info) = self.info.take() {
            lock(&self.gate).finish(&info, signal, Instant::now());
        }
    }
}

impl Drop for BootTicket {
    fn drop(&mut self) {
        if let Some(info) = self.info.take() {
            lock(&self.gate).finish(&info, BootSignal::NoSignal, Instant::now());
        }
    }
}

/// Locks the gate; a panic elsewhere leaves plain counters behind, so recover.
pub(crate) fn lock(gate: &Mutex<Gate>) -> std::sync::MutexGuard<'_, Gate> {
    gate.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A "Retry-After: 0" (or a date gone by) names no wait: the pause is
    /// the one taken without Retry-After, not the shortest there is,
    /// which would send the call back ten times a second.
    #[test]
    fn a_zero_retry_after_pauses_as_none_does() {
        let mut gate = Gate::new(GateSettings {
            retry_after_jitter: 0.0,
            ..GateSettings::default()
        });
        assert_eq!(gate.retry_pause(None), DEFAULT_RETRY_AFTER);
        assert_eq!(gate.retry_pause(Some(Duration::ZERO)), DEFAULT_RETRY_AFTER);
        // A short wait named is a wait, kept above the floor.
        assert_eq!(
            gate.retry_pause(Some(Duration::from_millis(1))),
            MIN_RETRY_PAUSE
        );
        assert_eq!(
            gate.retry_pause(Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
    }
}
