// The C++ side of tests/test_native_torch.py: hot reload seen through simai_torch.hpp.
//
//   surrogate_cpp URL NAME POLL WANT SECONDS
//
// Waits for a first version, then calls the model on the 4x2 test batch from two threads, every
// 5 ms each, until both saw version WANT (SECONDS at most) while Python publishes newer ones.
// Prints "v THREAD VERSION y0 y1 y2 y3" whenever a thread's answering version changes, "err
// ..." for a call that threw or a version that went down, and "calls N" at the end.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <simai_torch.hpp>

int main(int argc, char **argv)
{
    if (argc != 6) {
        std::fprintf(stderr, "usage: %s URL NAME POLL WANT SECONDS\n", argv[0]);
        return 2;
    }
    std::setvbuf(stdout, nullptr, _IOLBF, 0);
    std::vector<float> x(8);
    for (int i = 0; i < 4; i++) // test_native_torch.py's BATCH
        for (int j = 0; j < 2; j++)
            x[std::size_t(i * 2 + j)] = i * 0.5f + j * 0.25f - 1.0f;
    const std::int64_t want = std::atoll(argv[4]);
    const auto end = std::chrono::steady_clock::now() +
                     std::chrono::duration<double>(std::atof(argv[5]));
    std::mutex out;
    long calls = 0;
    try {
        simai::store s(argv[1]);
        simai::surrogate model(s, argv[2], std::atof(argv[3]), true);
        std::printf("first %lld\n", static_cast<long long>(model.wait(60.0)));
        auto caller = [&](int thread) {
            std::int64_t last = 0;
            long n = 0;
            while (last < want && std::chrono::steady_clock::now() < end) {
                try {
                    simai::prediction p = model.run(x, {4, 2});
                    n++;
                    if (p.version != last) {
                        std::lock_guard<std::mutex> hold(out);
                        if (p.version < last)
                            std::printf("err thread %d: version went down from %lld to %lld\n",
                                        thread, static_cast<long long>(last),
                                        static_cast<long long>(p.version));
                        if (p.shape != simai::shape_t{4, 1})
                            std::printf("err thread %d: output of %zu dimensions\n", thread,
                                        p.shape.size());
                        std::printf("v %d %lld", thread, static_cast<long long>(p.version));
                        for (float y : p.y)
                            std::printf(" %.9g", y);
                        std::printf("\n");
                        last = p.version;
                    }
                } catch (const simai::error &e) {
                    std::lock_guard<std::mutex> hold(out);
                    std::printf("err thread %d: %s\n", thread, e.what());
                }
                std::this_thread::sleep_for(std::chrono::milliseconds(5));
            }
            std::lock_guard<std::mutex> hold(out);
            calls += n;
        };
        std::thread other(caller, 1);
        caller(0);
        other.join();
        std::printf("calls %ld\n", calls);
        std::printf("held %lld\n", static_cast<long long>(model.version()));
        try { // a refusal is an exception carrying the code and message
            std::vector<float> wide(12);
            model.run(wide, {4, 3});
        } catch (const simai::error &e) {
            std::printf("wide %s\n", simai_code_name(e.code()));
        }
    } catch (const simai::error &e) {
        std::printf("err %s\n", e.what());
        return 1;
    }
    return 0;
}
