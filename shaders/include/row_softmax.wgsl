
// ---- shaders/include/row_softmax.wgsl, appended by the host to the row kernels ----
// (the losses and the accuracy counts)
// A 64-thread workgroup handles WG / LANES rows of stacked logits [P, B, C], LANES threads per
// row. LANES (a power of two, 1 to 64) is a pipeline constant the host picks from C. Where the
// threads of a row meet, in which workgroup and how they reduce comes from one of two files
// appended after this one: rows_workgroup.wgsl (workgroup memory and barriers, any adapter) or
// rows_subgroup.wgsl (a row's lanes in one subgroup, reduced by shuffles, no barriers). Both
// declare the entry's builtins `RowIds`, set this thread's `place` (`row_place`) and give
// `reduce_row`. The including kernel declares `logits: array<f32>` and a uniform `p` with `rows`
// and `classes`.
// Every thread must call the reductions (uniform control flow, so threads past the last row work
// on a clamped row and only skip their writes); each thread gets its own row's result.

override LANES: u32 = 64u;
const WG: u32 = 64u;
const F32_MAX: f32 = 3.4028235e38;

// This thread's place, set by row_place: its row, its lane in the row (0 to LANES - 1), whether
// the row exists, and (rows_workgroup.wgsl) its slot in the workgroup.
struct Place {
    row: u32,
    lane: u32,
    live: bool,
    slot: u32,
}
var<private> place: Place;

// Index of class k in row `row` of peer (or group) `peer` of the stacked [P, B, C] logits.
fn at(peer: u32, row: u32, k: u32) -> u32 {
    return (peer * p.rows + row) * p.classes + k;
}

// Sets `place` for this thread, at `slot` (0 to WG - 1) of workgroup `wg` of `nwg` (folded
// into two dimensions by the host): row slot / LANES of the workgroup's WG / LANES, clamped to
// the last of `rows` rows.
fn set_place(wg: vec3<u32>, nwg: vec3<u32>, slot: u32, rows: u32) {
    let row = (wg.x + wg.y * nwg.x) * (WG / LANES) + slot / LANES;
    place = Place(min(row, rows - 1u), slot % LANES, row < rows, slot);
}

// How many (class, peer) pairs a lane walks in a row: its classes lane, lane + LANES, ... times
// `per` peers. The kernels walk them in one loop, the peer j counting up inside each class, not
// as a peer loop inside a class loop: on lavapipe the nested loops made these kernels 2× slower
// at 4 peers and 100 classes, and the accuracy counters 30× (BENCHMARKS.md).
fn lane_pairs(lane: u32, per: u32) -> u32 {
    return (p.classes + LANES - 1u - lane) / LANES * per;
}

fn reduce_max(v: f32) -> f32 {
    return reduce_row(v, true);
}

fn reduce_sum(v: f32) -> f32 {
    return reduce_row(v, false);
}

// The stable log-sum-exp of z * inv_t over one row, in two parts: the row's largest logit M
// (unscaled) and log(sum(exp((z - M) * inv_t))), in [0, log C]; the log-sum-exp is
// M * inv_t + the second. Kept apart, never added: the log-probabilities subtract M from a
// logit before anything else (log_p), so logits of +-1e4, or ties near f32's largest, keep the
// log-sum that M + log C would round away.
fn row_max_log_sum(peer: u32, row: u32, inv_t: f32) -> vec2<f32> {
    var m = -F32_MAX;
    for (var k = place.lane; k < p.classes; k += LANES) {
        m = max(m, logits[at(peer, row, k)]);
    }
    m = reduce_max(m);
    var s = 0.0;
    for (var k = place.lane; k < p.classes; k += LANES) {
        s += exp((logits[at(peer, row, k)] - m) * inv_t);
    }
    return vec2<f32>(m, log(reduce_sum(s)));
}

// The log-probability of a class with logit z under softmax(z * inv_t) of a row whose
// row_max_log_sum is `parts`.
fn log_p(parts: vec2<f32>, z: f32, inv_t: f32) -> f32 {
    return (z - parts.x) * inv_t - parts.y;
}

// One class's cross-entropy term -q * log p = q * ((M - z) + log-sum) at temperature 1, 0 for a
// class of no weight (even where the log-probability is -inf: 0 * inf is NaN). Where M - z
// passes f32's largest (logits 6.8e38 apart at most) the term is taken from halves (exact: a
// power of two), so a smoothed class of weight eps / C far below the row's largest adds its
// finite share, not inf; there only, as the compiler may regroup the halved sums.
fn ce_term(q: f32, parts: vec2<f32>, z: f32) -> f32 {
    let gap = (parts.x - z) + parts.y;
    let halves = (2.0 * q) * ((0.5 * parts.x - 0.5 * z) + 0.5 * parts.y);
    return select(0.0, select(halves, q * gap, is_finite(gap)), q > 0.0);
}

// Whether x is neither infinite nor NaN.
fn is_finite(x: f32) -> bool {
    return abs(x) <= F32_MAX;
}
