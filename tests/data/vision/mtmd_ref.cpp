// Vision references from libmtmd, for tests/vision.rs (see README.md in this folder).
// The configuration of the shared references: 2 threads, context 4096, batch 2048,
// ubatch 512, flash attention auto (on for CPU) in both the language model and the encoder.
//
// Build against llama.cpp 0c1e57098 (vendored in PyPI llama-cpp-python==0.3.36):
//   g++ -O2 -std=c++17 mtmd_ref.cpp -I$LLAMA/include -I$LLAMA/ggml/include \
//       -I$LLAMA/tools/mtmd -L$BUILD/bin -lmtmd -lllama -lggml -lggml-base -o mtmd_ref
// Usage: mtmd_ref MODEL MMPROJ N_GEN OUTDIR < cases.tsv
// Each input line is NAME <tab> PROMPT [<tab> IMAGE[,IMAGE...]]; the prompt holds one
// "<__media__>" per image and "\n" for newlines. For each case it writes OUTDIR/NAME.json
// (the chunks: text token ids, image token counts, encode times; the greedy tokens and
// each one's bytes),
// OUTDIR/NAME.I.f32 (image I's embeddings, little-endian f32, tokens x n_embd) and
// OUTDIR/NAME.logits.f32 (the logits at the last prompt position).
#include "llama.h"
#include "mtmd.h"
#include "mtmd-helper.h"
#include "ggml-backend.h"

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

static std::vector<std::string> split(const std::string & s, char sep) {
    std::vector<std::string> out;
    std::stringstream ss(s);
    std::string part;
    while (std::getline(ss, part, sep)) out.push_back(part);
    return out;
}

static std::string unescape(const std::string & s) {
    std::string o;
    for (size_t i = 0; i < s.size(); i++) {
        if (s[i] == '\\' && i + 1 < s.size() && s[i + 1] == 'n') { o += '\n'; i++; }
        else o += s[i];
    }
    return o;
}

// With MTMD_REF_DUMP=DIR set, every F32 tensor the encoder computes is written to
// DIR/<name>.f32 (the last image's, when there are several): a debugging aid.
static bool dump_tensor(struct ggml_tensor * t, bool ask, void * user_data) {
    if (ask) return t->type == GGML_TYPE_F32;
    const char * dir = static_cast<const char *>(user_data);
    std::vector<float> buf(ggml_nelements(t));
    ggml_backend_tensor_get(t, buf.data(), 0, ggml_nbytes(t));
    std::string name = t->name;
    for (auto & ch : name) if (ch == '/' || ch == ' ') ch = '_';
    std::ofstream f(std::string(dir) + "/" + name + ".f32", std::ios::binary);
    f.write(reinterpret_cast<const char *>(buf.data()), buf.size() * sizeof(float));
    return true;
}

static void write_f32(const std::string & path, const float * data, size_t n) {
    std::ofstream f(path, std::ios::binary);
    f.write(reinterpret_cast<const char *>(data), n * sizeof(float));
}

int main(int argc, char ** argv) {
    if (argc < 5) { fprintf(stderr, "usage: %s MODEL MMPROJ N_GEN OUTDIR < cases.tsv\n", argv[0]); return 2; }
    llama_backend_init();
    llama_model * model = llama_model_load_from_file(argv[1], llama_model_default_params());
    if (!model) return 1;
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_gen = atoi(argv[3]);
    const std::string outdir = argv[4];
    const int n_vocab = llama_vocab_n_tokens(vocab);
    const int n_embd = llama_model_n_embd_inp(model);

    auto mp = mtmd_context_params_default();
    mp.use_gpu = false;
    mp.n_threads = 2;
    mp.print_timings = false;
    mp.warmup = false;
    if (const char * dir = getenv("MTMD_REF_DUMP")) {
        mp.cb_eval = dump_tensor;
        mp.cb_eval_user_data = const_cast<char *>(dir);
    }
    mtmd_context * mctx = mtmd_init_from_file(argv[2], model, mp);
    if (!mctx) return 1;

    std::string line;
    while (std::getline(std::cin, line)) {
        auto cols = split(line, '\t');
        if (cols.size() < 2 || cols.size() > 3) { fprintf(stderr, "bad case line: %s\n", line.c_str()); return 2; }
        const std::string name = cols[0];
        const std::string prompt = unescape(cols[1]);
        std::vector<mtmd_bitmap *> bitmaps;
        for (const auto & path : split(cols.size() == 3 ? cols[2] : "", ',')) {
            auto w = mtmd_helper_bitmap_init_from_file(mctx, path.c_str(), false, mtmd_helper_init_opt_default());
            if (!w.bitmap) { fprintf(stderr, "cannot load %s\n", path.c_str()); return 1; }
            bitmaps.push_back(w.bitmap);
        }

        auto cp = llama_context_default_params();
        cp.n_ctx = 4096; cp.n_batch = 2048; cp.n_ubatch = 512; cp.n_threads = 2; cp.n_threads_batch = 2;
        llama_context * ctx = llama_init_from_model(model, cp);

        mtmd_input_chunks * chunks = mtmd_input_chunks_init();
        mtmd_input_text text = { prompt.c_str(), prompt.size(), true, true };
        std::vector<const mtmd_bitmap *> bm(bitmaps.begin(), bitmaps.end());
        if (mtmd_tokenize(mctx, chunks, &text, bm.data(), bm.size()) != 0) return 1;

        std::ostringstream js;
        js << "{\"name\":\"" << name << "\",\"chunks\":[";
        llama_pos n_past = 0;
        int image_i = 0;
        const size_t n_chunks = mtmd_input_chunks_size(chunks);
        for (size_t c = 0; c < n_chunks; c++) {
            const mtmd_input_chunk * chunk = mtmd_input_chunks_get(chunks, c);
            const bool last = c + 1 == n_chunks;
            if (c) js << ",";
            if (mtmd_input_chunk_get_type(chunk) == MTMD_INPUT_CHUNK_TYPE_TEXT) {
                size_t n = 0;
                const llama_token * toks = mtmd_input_chunk_get_tokens_text(chunk, &n);
                js << "{\"type\":\"text\",\"tokens\":[";
                for (size_t i = 0; i < n; i++) js << (i ? "," : "") << toks[i];
                js << "]}";
                if (mtmd_helper_eval_chunk_single(mctx, ctx, chunk, n_past, 0, cp.n_batch, last, &n_past)) return 1;
            } else {
                const size_t n_tok = mtmd_input_chunk_get_n_tokens(chunk);
                auto t0 = std::chrono::steady_clock::now();
                if (mtmd_encode_chunk(mctx, chunk)) return 1;
                auto t1 = std::chrono::steady_clock::now();
                float * embd = mtmd_get_output_embd(mctx);
                const std::string file = name + "." + std::to_string(image_i) + ".f32";
                write_f32(outdir + "/" + file, embd, n_tok * n_embd);
                js << "{\"type\":\"image\",\"n_tokens\":" << n_tok
                   << ",\"n_pos\":" << mtmd_input_chunk_get_n_pos(chunk)
                   << ",\"embeddings\":\"" << file << "\",\"encode_ms\":"
                   << std::chrono::duration<double, std::milli>(t1 - t0).count() << "}";
                std::vector<float> copy(embd, embd + n_tok * n_embd);
                if (mtmd_helper_decode_image_chunk(mctx, ctx, chunk, copy.data(), n_past, 0, cp.n_batch, &n_past, nullptr, nullptr)) return 1;
                image_i++;
            }
        }
        js << "],\"generated\":[";
        std::string pieces;
        const std::string logits_file = name + ".logits.f32";
        write_f32(outdir + "/" + logits_file, llama_get_logits_ith(ctx, -1), n_vocab);
        llama_batch batch = llama_batch_init(1, 0, 1);
        for (int i = 0; i < n_gen; i++) {
            const float * l = llama_get_logits_ith(ctx, -1);
            llama_token best = 0;
            for (int j = 1; j < n_vocab; j++) if (l[j] > l[best]) best = j;
            js << (i ? "," : "") << best;
            if (llama_vocab_is_eog(vocab, best)) break;
            char piece[256];
            const int n = llama_token_to_piece(vocab, best, piece, sizeof piece, 0, false);
            pieces += i ? ",[" : "[";
            for (int b = 0; b < n; b++) pieces += (b ? "," : "") + std::to_string((unsigned char) piece[b]);
            pieces += "]";
            batch.n_tokens = 1;
            batch.token[0] = best; batch.pos[0] = n_past++; batch.n_seq_id[0] = 1;
            batch.seq_id[0][0] = 0; batch.logits[0] = true;
            if (llama_decode(ctx, batch)) return 1;
        }
        js << "],\"pieces\":[" << pieces << "],\"last_logits\":\"" << logits_file << "\"}";
        std::ofstream(outdir + "/" + name + ".json") << js.str() << "\n";
        llama_batch_free(batch);
        mtmd_input_chunks_free(chunks);
        for (auto * b : bitmaps) mtmd_bitmap_free(b);
        llama_free(ctx);
    }
    mtmd_free(mctx);
    llama_model_free(model);
    return 0;
}
