
// ---- shaders/include/peer_kl.wgsl, appended by the host after the row files ----
// The peer side of the mutual-learning KL term. The including kernel's uniform `p` has `peers`.

const MAX_PEERS: u32 = 32u; // the host rejects larger cohorts for these kernels
// Per peer j, the two parts of lse(z_j / T) on this thread's row (row_max_log_sum): the row's
// largest logit and the log-sum after it.
var<private> peer_parts: array<vec2<f32>, MAX_PEERS>;

// Fills peer_parts for every peer of this row.
fn fill_peer_parts(row: u32, inv_t: f32) {
    for (var j = 0u; j < p.peers; j++) {
        peer_parts[j] = row_max_log_sum(j, row, inv_t);
    }
}

// Peer j's log-probability of a class with logit z.
fn peer_log_p(j: u32, z: f32, inv_t: f32) -> f32 {
    return log_p(peer_parts[j], z, inv_t);
}

// Peer j's terms at class k of this row, for peer i with logit zi and p_i = pi there:
// (p_j (log p_j - log p_i) + p_i - p_j, p_j); zero for j = i. Summed over j != i they are the
// KL term of class k and the others' total probability. Adding p_i - p_j changes no sum over the
// classes (both distributions sum to one) but makes each class's term p_j phi(r), with
// r = log p_j - log p_i and phi(r) = exp(-r) - 1 + r >= 0 of order r^2/2: the terms of order r,
// which cancel in the sum, are gone (summing p_j r in f32 left a KL of order r^2 several
// percent off at T = 1000, where r ~ 1e-4). For |r| < 1/4 phi comes from its series (relative
// error about 4e-7 at most), else from p_i - p_j + p_j r.
// r is ((z_j - M_j) - (z_i - M_i)) / T, M the rows' largest logits, less the log-sums'
// difference: the logits' part is rounded at the size of the logits' spread, and the log-sums'
// once per row, which enters the KL at second order only. From the two log-probabilities, each
// rounded near log C, r would be ~1e-3 of itself off at 1e-4 (T = 1000); from (z_j - z_i) / T
// less the maxes' difference, as far off where the peers' logits differ by thousands.
fn pair_terms(i: u32, j: u32, row: u32, k: u32, zi: f32, pi: f32, inv_t: f32) -> vec2<f32> {
    if (j == i) {
        return vec2<f32>(0.0);
    }
    let zj = logits[at(j, row, k)];
    let sj = zj - peer_parts[j].x;
    let pj = exp(sj * inv_t - peer_parts[j].y);
    let r = (sj - (zi - peer_parts[i].x)) * inv_t - (peer_parts[j].y - peer_parts[i].y);
    let series = r * r * (0.5 + r * (-1.0 / 6.0 + r * (1.0 / 24.0 + r * (-1.0 / 120.0 + r / 720.0))));
    // Where r passes f32's largest (the peers' logits 3.4e38 apart) p_j r may not: from r / 2,
    // every part halved first, there only: with r from halves everywhere the KL at T = 1 came
    // out 0.8% off on lavapipe (the compiler regrouped the sums, losing r's careful order).
    let half_r = ((0.5 * zj - 0.5 * peer_parts[j].x) - (0.5 * zi - 0.5 * peer_parts[i].x)) * inv_t
        - 0.5 * (peer_parts[j].y - peer_parts[i].y);
    let linear = select((2.0 * pj) * half_r, pj * r, is_finite(r));
    let term = select(pi - pj + linear, pj * series, abs(r) < 0.25);
    // A class peer j gives no probability adds p_i (0 · log 0 = 0, not 0 · -inf = NaN).
    return select(vec2<f32>(term, pj), vec2<f32>(pi, 0.0), pj == 0.0);
}
