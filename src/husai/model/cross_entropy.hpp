#pragma once

// Softmax cross-entropy of logits [N, V] against labels [N].

#include <cstdint>

namespace husai {

// losses[r] = -log softmax(logits[r])[labels[r]]; correct[r] = 1 when the arg-max is the label
// (ties resolved to the lowest index, as torch.argmax). When dlogits is non-null it receives
// d(mean loss)/dlogits = (softmax - onehot) * grad_scale (grad_scale = 1/N for a mean over N rows).
template <typename T>
void cross_entropy_forward_backward(T* losses, uint8_t* correct, T* dlogits, const T* logits,
                                    const int64_t* labels, int64_t N, int64_t V, T grad_scale);

}  // namespace husai
