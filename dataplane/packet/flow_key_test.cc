#include "dataplane/packet/flow_key.h"

#include <gtest/gtest.h>

namespace pgwarden::packet {
namespace {

TEST(FlowKeyTest, BothDirectionsGiveTheSameKey) {
  Address a = Address::v4(0xC6120002), b = Address::v4(0xC6120102);
  bool a_first = false, b_first = false;
  FlowKey k1 = make_flow_key(a, 40000, b, 5432, 6, &a_first);
  FlowKey k2 = make_flow_key(b, 5432, a, 40000, 6, &b_first);
  EXPECT_EQ(k1, k2);
  EXPECT_NE(a_first, b_first);
}

TEST(FlowKeyTest, SameAddressesOrderedByPort) {
  Address a = Address::v4(0x7f000001);
  bool first = false;
  FlowKey k1 = make_flow_key(a, 1000, a, 2000, 6, &first);
  EXPECT_TRUE(first);
  FlowKey k2 = make_flow_key(a, 2000, a, 1000, 6, &first);
  EXPECT_FALSE(first);
  EXPECT_EQ(k1, k2);
}

TEST(FlowKeyTest, PrefixContainsOnlyMatchingFamilyAndBits) {
  Prefix p;
  ASSERT_TRUE(parse_prefix("198.18.0.0/15", &p));
  EXPECT_TRUE(p.contains(Address::v4(0xC6130001)));   // 198.19.0.1
  EXPECT_FALSE(p.contains(Address::v4(0xC6140001)));  // 198.20.0.1
  Prefix v6;
  ASSERT_TRUE(parse_prefix("2001:db8::/32", &v6));
  EXPECT_FALSE(v6.contains(Address::v4(0xC6130001)));
  uint8_t inside[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  EXPECT_TRUE(v6.contains(Address::v6(inside)));
}

TEST(FlowKeyTest, SingleHostPrefixWithoutLength) {
  Prefix p;
  ASSERT_TRUE(parse_prefix("198.18.0.10", &p));
  EXPECT_EQ(p.prefix_len, 32);
  EXPECT_TRUE(p.contains(Address::v4(0xC612000A)));
  EXPECT_FALSE(p.contains(Address::v4(0xC612000B)));
}

TEST(FlowKeyTest, BadPrefixTextIsRejected) {
  Prefix p;
  EXPECT_FALSE(parse_prefix("198.18.0.0/33", &p));
  EXPECT_FALSE(parse_prefix("198.18.0.0/", &p));
  EXPECT_FALSE(parse_prefix("not-an-address", &p));
  EXPECT_FALSE(parse_prefix("::1/129", &p));
}

TEST(FlowKeyTest, AddressPrintsInStandardNotation) {
  EXPECT_EQ(Address::v4(0xC612000A).to_string(), "198.18.0.10");
}

}  // namespace
}  // namespace pgwarden::packet
