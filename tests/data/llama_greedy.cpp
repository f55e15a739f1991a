// Greedy references from libllama, for tests/smollm2_greedy.rs's long-prompt cases.
// The configuration of the shared references: 2 threads, context 4096, batch 2048,
// ubatch 512, flash attention auto (on for CPU), F16 KV cache.
//
// Build against llama.cpp 0c1e57098 (vendored in PyPI llama-cpp-python==0.3.36):
//   g++ -O2 -std=c++17 llama_greedy.cpp -I$LLAMA/include -I$LLAMA/ggml/include \
//       -L$LLAMA/build/bin -lllama -o llama_greedy
// Usage: llama_greedy MODEL N_GEN < prompts.txt   (one prompt per line)
// Prints one JSON object per prompt: prompt, prompt_token_ids, generated_token_ids.
#include "llama.h"
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

static std::string json_escape(const std::string & s) {
    std::string o;
    for (unsigned char c : s) {
        if (c == '"' || c == '\\') { o += '\\'; o += c; }
        else if (c == '\n') o += "\\n";
        else if (c < 0x20) { char b[8]; snprintf(b, sizeof b, "\\u%04x", c); o += b; }
        else o += c;
    }
    return o;
}

int main(int argc, char ** argv) {
    if (argc < 3) { fprintf(stderr, "usage: %s MODEL N_GEN < prompts\n", argv[0]); return 2; }
    llama_backend_init();
    llama_model * model = llama_model_load_from_file(argv[1], llama_model_default_params());
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_gen = atoi(argv[2]);
    const int n_vocab = llama_vocab_n_tokens(vocab);
    std::string prompt;
    while (std::getline(std::cin, prompt)) {
        auto cp = llama_context_default_params();
        cp.n_ctx = 4096; cp.n_batch = 2048; cp.n_ubatch = 512; cp.n_threads = 2; cp.n_threads_batch = 2;
        llama_context * ctx = llama_init_from_model(model, cp);
        std::vector<llama_token> ids(prompt.size() + 8);
        int n = llama_tokenize(vocab, prompt.c_str(), prompt.size(), ids.data(), ids.size(), false, true);
        ids.resize(n);
        std::vector<llama_token> out;
        llama_batch b = llama_batch_get_one(ids.data(), ids.size());
        if (llama_decode(ctx, b)) return 1;
        for (int i = 0; i < n_gen; i++) {
            const float * l = llama_get_logits_ith(ctx, -1);
            llama_token best = 0;
            for (int j = 1; j < n_vocab; j++) if (l[j] > l[best]) best = j;
            out.push_back(best);
            if (llama_vocab_is_eog(vocab, best)) break;
            llama_batch b1 = llama_batch_get_one(&out.back(), 1);
            if (llama_decode(ctx, b1)) return 1;
        }
        printf("{\"prompt\":\"%s\",\"prompt_token_ids\":[", json_escape(prompt).c_str());
        for (size_t i = 0; i < ids.size(); i++) printf("%s%d", i ? "," : "", ids[i]);
        printf("],\"generated_token_ids\":[");
        for (size_t i = 0; i < out.size(); i++) printf("%s%d", i ? "," : "", out[i]);
        printf("]}\n");
        llama_free(ctx);
    }
    llama_model_free(model);
}
