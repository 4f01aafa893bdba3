#include "dataplane/session/execution_ledger.h"

#include <algorithm>

namespace pgwarden::session {

namespace pw = pgwarden::pgwire;
using json = nlohmann::json;

json render_params(const pw::Bind& b, size_t budget, bool* truncated) {
  *truncated = false;
  std::vector<pw::Int16> formats(b.param_formats.begin(), b.param_formats.end());
  json out = json::array();
  size_t i = 0;
  for (const pw::Value& v : b.params) {
    // No codes: all text; one code: for every parameter; else one code per parameter.
    pw::Int16 format = formats.size() == 1 ? formats[0] : (i < formats.size() ? formats[i] : 0);
    ++i;
    if (v.is_null) {
      out.push_back(nullptr);
      continue;
    }
    std::string_view text = v.text();
    const size_t cost = format == 1 ? text.size() * 2 : text.size();
    if (cost > budget) *truncated = true;
    if (format == 1) {
      static constexpr char kHex[] = "0123456789abcdef";
      size_t n = std::min(text.size(), budget / 2);
      std::string hex;
      hex.reserve(n * 2);
      for (size_t k = 0; k < n; ++k) {
        auto c = static_cast<unsigned char>(text[k]);
        hex += kHex[c >> 4];
        hex += kHex[c & 15];
      }
      budget -= hex.size();
      out.push_back(json{{"binary_hex", std::move(hex)}});
    } else {
      std::string_view kept = text.substr(0, std::min(text.size(), budget));
      budget -= kept.size();
      out.push_back(std::string(kept));
    }
  }
  return out;
}

void ExecutionLedger::on_forwarded(const pw::Message& m, bool recorded, std::string_view rule) {
  switch (m.type) {
    case 'P': {
      pw::Parse p;
      if (!pw::parse(m.body, &p).ok()) return;
      std::string name(p.statement);
      if (statements_.size() >= kMaxNames && !statements_.contains(name)) statements_.clear();
      statements_[std::move(name)] = Statement{std::string(p.query), std::string(rule), recorded};
      return;
    }
    case 'B': {
      pw::Bind b;
      if (pw::parse(m.body, &b).ok()) on_bind(b);
      return;
    }
    case 'C': {
      pw::Close c;
      if (!pw::parse(m.body, &c).ok()) return;
      if (c.kind == 'S') {
        statements_.erase(std::string(c.name));
      } else {
        portals_.erase(std::string(c.name));
      }
      return;
    }
    case 'E': {
      pw::Execute e;
      if (!recorded || !pw::parse(m.body, &e).ok()) return;
      if (auto it = portals_.find(std::string(e.portal)); it != portals_.end()) {
        it->second.recorded = true;
        it->second.params = nullptr;
      }
      return;
    }
    default:
      return;
  }
}

ExecutionLedger::Portal* ExecutionLedger::bind_portal(std::string_view portal_name,
                                                      std::string_view statement) {
  std::string name(portal_name);
  if (portals_.size() >= kMaxNames && !portals_.contains(name)) portals_.clear();
  Portal& portal = portals_[std::move(name)];
  portal = Portal{};
  auto it = statements_.find(std::string(statement));
  if (it == statements_.end()) return &portal;
  portal.sql = it->second.sql;
  portal.rule = it->second.rule;
  portal.recorded = it->second.covers_first;
  it->second.covers_first = false;
  return &portal;
}

void ExecutionLedger::on_bind(const pw::Bind& b) {
  Portal* portal = bind_portal(b.portal, b.statement);
  if (!portal->recorded) portal->params = render_params(b, kMaxParamBytes, &portal->truncated);
}

void ExecutionLedger::on_bind_streamed(std::string_view portal_name, std::string_view statement,
                                       json params, bool summarised) {
  Portal* portal = bind_portal(portal_name, statement);
  if (portal->recorded) return;
  portal->params = std::move(params);
  portal->truncated = summarised;
}

const ExecutionLedger::Portal* ExecutionLedger::uncovered(std::string_view portal) const {
  auto it = portals_.find(std::string(portal));
  if (it == portals_.end()) return &unknown_;
  return it->second.recorded ? nullptr : &it->second;
}

}  // namespace pgwarden::session
