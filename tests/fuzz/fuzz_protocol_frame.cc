// Fuzzes the dp <-> cp frame decoder and message parsers with arbitrary byte streams, fed in
// two different splits (the results must agree).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/protocol/frame.h"
#include "common/protocol/messages.h"

namespace {

using namespace pgwarden::protocol;

std::vector<std::string> decode(std::string_view data, size_t chunk) {
  FrameDecoder d;
  std::vector<std::string> out;
  for (size_t i = 0; i < data.size(); i += chunk) {
    d.feed(data.substr(i, chunk));
    while (true) {
      auto f = d.next();
      if (!f.is_ok() || !f->has_value()) break;
      out.push_back(**f);
    }
    if (d.failed()) break;
  }
  return out;
}

void parse_everything(const std::string& payload) {
  auto j = parse_payload(payload);
  if (!j.is_ok()) return;
  (void)parse_request_header(*j);
  (void)Hello::from_json(*j);
  (void)AuthenticateRequest::from_json(*j);
  (void)AuthenticateResponse::from_json(*j);
  (void)ScramStartRequest::from_json(*j);
  (void)ScramContinueRequest::from_json(*j);
  (void)ScramFinishRequest::from_json(*j);
  (void)AnalyseRequest::from_json(*j);
  (void)AnalyseResponse::from_json(*j);
  (void)ApprovalRequest::from_json(*j);
  (void)ApprovalResponse::from_json(*j);
  (void)MaskPlanRequest::from_json(*j);
  (void)MaskPlanResponse::from_json(*j);
  (void)Event::from_json(*j);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  auto whole = decode(in, in.size() + 1);
  auto split = decode(in, 3);
  if (whole != split) std::abort();
  for (const auto& p : whole) parse_everything(p);
  // The payload alone, as if framed correctly.
  parse_everything(std::string(in));
  return 0;
}
