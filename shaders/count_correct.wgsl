// Accuracy counters over stacked logits [P, B, C] and labels [B], LANES threads per batch row:
// counts[j] += 1 where argmax(z_j) == label (first index on ties), and counts[P] += 1 where the
// ensemble, argmax of the mean of the peers' softmax probabilities, is right.
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

// LANES, place, at, lane_pairs, log_p, reduce_max and reduce_sum come from
// shaders/include/row_softmax.wgsl, RowIds and row_place from rows_workgroup.wgsl or
// rows_subgroup.wgsl.

const MAX_PEERS: u32 = 32u; // the host rejects larger cohorts for this kernel
// Per peer j, row_max_log_sum of z_j on this thread's row (its largest logit and the log-sum
// after it).
var<private> parts: array<vec2<f32>, MAX_PEERS>;

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
        var s = 0.0;
        for (var k = place.lane; k < p.classes; k += LANES) {
            s += exp(logits[at(j, row, k)] - top);
        }
        parts[j] = vec2<f32>(top, log(reduce_sum(s)));
    }
    // The ensemble's argmax over classes of the peers' summed probability (at least 0; a lane
    // past the last class keeps -1, which never wins), in one loop over (class, peer) pairs.
    var k_best = 0u;
    var best_prob = -1.0;
    var prob = 0.0;
    var k = place.lane;
    var j = 0u;
    for (var t = 0u; t < lane_pairs(place.lane, p.peers); t++) {
        prob += exp(log_p(parts[j], logits[at(j, row, k)], 1.0));
        j++;
        if (j == p.peers) {
            if (prob > best_prob) {
                best_prob = prob;
                k_best = k;
            }
            prob = 0.0;
            j = 0u;
            k += LANES;
        }
    }
    if (first_hit(best_prob == reduce_max(best_prob), k_best) == label && counted) {
        atomicAdd(&counts[p.peers], 1u);
    }
}
