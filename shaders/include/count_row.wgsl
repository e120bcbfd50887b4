
// ---- shaders/include/count_row.wgsl, appended to count_correct.wgsl and dml_loss.wgsl ----
// The accuracy counts of batch row `row` of stacked logits [P, B, C]: counts[j] += 1 where
// argmax(z_j) == label (first index on ties), counts[P] += 1 where the ensemble, argmax of the
// mean of the peers' softmax probabilities, is right. The includer declares `logits`, `labels`,
// `counts: array<atomic<u32>>`, a uniform `p` with `peers`, `rows` and `classes`, and
// `at(peer, row, k)`; the host rejects cohorts of more than 32 peers for these kernels.

fn count_row(row: u32) {
    let label = labels[row];
    var lse: array<f32, 32>;
    for (var j = 0u; j < p.peers; j++) {
        var best = 0u;
        var m = logits[at(j, row, 0u)];
        for (var k = 1u; k < p.classes; k++) {
            let z = logits[at(j, row, k)];
            if (z > m) {
                m = z;
                best = k;
            }
        }
        if (best == label) {
            atomicAdd(&counts[j], 1u);
        }
        var s = 0.0;
        for (var k = 0u; k < p.classes; k++) {
            s += exp(logits[at(j, row, k)] - m);
        }
        lse[j] = m + log(s);
    }
    var best = 0u;
    var best_prob = -1.0;
    for (var k = 0u; k < p.classes; k++) {
        var prob = 0.0;
        for (var j = 0u; j < p.peers; j++) {
            prob += exp(logits[at(j, row, k)] - lse[j]);
        }
        prob /= f32(p.peers);
        if (prob > best_prob) {
            best_prob = prob;
            best = k;
        }
    }
    if (best == label) {
        atomicAdd(&counts[p.peers], 1u);
    }
}
