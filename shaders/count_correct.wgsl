// Accuracy counters over stacked logits [P, B, C] and labels [B], LANES threads per batch row:
// counts[j] += 1 where argmax(z_j) == label (first index on ties), and counts[P] += 1 where the
// ensemble, argmax of the mean of the peers' softmax probabilities, is right.
// The ensemble sums each class's probabilities in two parts, whole peers w and a remainder r: a
// peer whose largest logit is this class's alone adds 1 to w and minus its other classes'
// probability, tail / (1 + tail), to r; any other (class, peer) adds its probability to r.
// Classes compare by (w - w') + (r - r'): two confident peers that disagree, each within f32's
// spacing of 1 (0.99999999 and 0.9999999999 both round to 1), are told apart by what each lacks,
// where summed probabilities tied and the first class won.
// Counts accumulate across calls, so metrics stay on the GPU until read.
// CPU twin: src/cpu/count_correct.rs.

struct Params {
    peers: u32,
    rows: u32,
    classes: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read_write> counts: array<atomic<u32>>;

// LANES, place, at, lane_pairs, log_p, reduce_max, reduce_sum and F32_MAX come from
// shaders/include/row_softmax.wgsl, RowIds and row_place from rows_workgroup.wgsl or
// rows_subgroup.wgsl.

const MAX_PEERS: u32 = 32u; // the host rejects larger cohorts for this kernel
// Per peer j on this thread's row: its largest logit M, the log of the sum of exp(z - M), the
// part of that sum from classes below M (tail; NaN where a logit is), and how many classes
// have M (ties).
var<private> parts: array<vec4<f32>, MAX_PEERS>;

// The least class k over the row's lanes where `hit` (the lane's best value is the row's).
// Classes travel through the reduction as f32: exact below 2^24, which the host checks.
fn first_hit(hit: bool, k: u32) -> u32 {
    return u32(-reduce_max(-select(16777216.0, f32(k), hit)));
}

@compute @workgroup_size(64)
fn main(ids: RowIds) {
    row_place(ids, p.rows);
    let row = place.row;
    let counted = place.live && place.lane == 0u;
    let label = labels[row];
    for (var j = 0u; j < p.peers; j++) {
        // This lane's best logit and its first class with it. NaN never wins (as in the CPU
        // twin): a lane with no logit above -inf (a row of NaN or -inf, or a lane past the
        // last class) keeps -inf and its first class, so where no lane has better the row's
        // class is 0.
        var k_best = place.lane % p.classes;
        var m = bitcast<f32>(0xff800000u); // -inf
        for (var k = place.lane; k < p.classes; k += LANES) {
            let z = logits[at(j, row, k)];
            if (z > m) {
                m = z;
                k_best = k;
            }
        }
        let top = reduce_max(m);
        if (first_hit(m == top, k_best) == label && counted) {
            atomicAdd(&counts[j], 1u);
        }
        var tail = 0.0;
        var ties = 0.0;
        for (var k = place.lane; k < p.classes; k += LANES) {
            let z = logits[at(j, row, k)];
            if (z == top) {
                ties += 1.0;
            } else {
                tail += exp(z - top);
            }
        }
        tail = reduce_sum(tail);
        ties = reduce_sum(ties);
        parts[j] = vec4<f32>(top, log(ties + tail), tail, ties);
    }
    // The ensemble's argmax over classes of the peers' summed probability as (w, r), in one
    // loop over (class, peer) pairs. A lane past the last class keeps (-1, 0), below every
    // class's; NaN never wins.
    var k_best = 0u;
    var w_best = -1.0;
    var r_best = 0.0;
    var w = 0.0;
    var r = 0.0;
    var k = place.lane;
    var j = 0u;
    for (var t = 0u; t < lane_pairs(place.lane, p.peers); t++) {
        let z = logits[at(j, row, k)];
        let peer = parts[j];
        if (peer.w == 1.0 && z == peer.x) {
            w += 1.0;
            r -= peer.z / (1.0 + peer.z);
        } else {
            r += exp(log_p(peer.xy, z, 1.0));
        }
        j++;
        if (j == p.peers) {
            if ((w - w_best) + (r - r_best) > 0.0) {
                w_best = w;
                r_best = r;
                k_best = k;
            }
            w = 0.0;
            r = 0.0;
            j = 0u;
            k += LANES;
        }
    }
    // Across the row's lanes: those whose w + r, rounded, is within two f32 spacings of the
    // largest, then among them the largest (w - their largest w) + r, the first class on ties.
    let v = w_best + r_best;
    let v_max = reduce_max(v);
    let near = v >= v_max - abs(v_max) * 2.4e-7;
    let w_near = reduce_max(select(-2.0, w_best, near));
    let key = select(-F32_MAX, (w_best - w_near) + r_best, near);
    // Reduced apart: after `near &&` only the near lanes would call it.
    let key_max = reduce_max(key);
    if (first_hit(near && key == key_max, k_best) == label && counted) {
        atomicAdd(&counts[p.peers], 1u);
    }
}
