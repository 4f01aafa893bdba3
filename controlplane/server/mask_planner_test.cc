#include "controlplane/server/mask_planner.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "dataplane/masking/mask_apply.h"

namespace pgwarden::server {
namespace {

// A catalog answering for one table (oid 16400: crm.customers) or failing like a down DB.
class FixedCatalog : public maskplan::Catalog {
 public:
  bool down = false;
  Result<maskplan::CatalogSnapshot> resolve(const std::vector<uint32_t>&,
                                            const std::vector<uint32_t>& types) override {
    if (down) return unavailable("catalog connection failed");
    maskplan::CatalogSnapshot s;
    for (uint32_t t : types) {
      if (const maskplan::TypeInfo* info = maskplan::builtin_type(t)) s.types[t] = *info;
    }
    s.columns[{16400, 1}] = {"crm", "customers", "id"};
    s.columns[{16400, 3}] = {"crm", "customers", "email"};
    s.columns[{16400, 5}] = {"crm", "customers", "ssn"};
    return s;
  }
};

class MaskPlannerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/pgw-maskplanner-XXXXXX";
    dir_ = mkdtemp(tmpl);
    std::ofstream(dir_ + "/key") << "an-example-master-key-of-32-bytes";
    ::chmod((dir_ + "/key").c_str(), 0600);
    config_.version = 3;
    config_.masking.key = vault::SecretSource{vault::SecretSource::Kind::kFile, dir_ + "/key"};
    target_.name = "demo";
    policy_.name = "agents";
    policy_.masks = {{"crm.customers.email", "", "", "email"}, {"", "*ssn*", "", "hash"}};
    planner_.set_catalog_for_test("demo", catalog_);
  }
  void TearDown() override { (void)!system(("rm -rf '" + dir_ + "'").c_str()); }

  Result<protocol::MaskPlanResponse> plan() {
    protocol::MaskPlanRequest req{"s",
                                  {{"id", 16400, 1, 23, 0},
                                   {"email", 16400, 3, 25, 0},
                                   {"ssn", 16400, 5, 25, 0},
                                   {"upper", 0, 0, 25, 0}}};
    std::string sid = "s";
    AuthenticatedIdentity id{"alice", "iss", {"agents"}};
    SessionView view{sid, id, policy_, target_, config_};
    return planner_.plan(view, req);
  }

  std::string dir_;
  config::Config config_;
  config::Target target_;
  policy::Policy policy_;
  std::shared_ptr<FixedCatalog> catalog_ = std::make_shared<FixedCatalog>();
  CatalogMaskPlanner planner_;
};

TEST_F(MaskPlannerTest, ResponseRoundTripsIntoTheDataplaneRowMaskPlan) {
  auto r = plan();
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  // The protocol envelope survives encoding, and the dp's parser accepts the plan as is.
  auto wire = protocol::MaskPlanResponse::from_json(r->to_json());
  ASSERT_TRUE(wire.is_ok()) << wire.status().to_string();
  auto dp = masking::RowMaskPlan::from_json(wire->plan);
  ASSERT_TRUE(dp.is_ok()) << dp.status().to_string();
  EXPECT_EQ(dp->column_count, 4u);
  ASSERT_EQ(dp->columns.size(), 4u);
  EXPECT_EQ(dp->columns[0].function, masking::MaskFunction::kNone);
  EXPECT_EQ(dp->columns[1].function, masking::MaskFunction::kEmail);
  EXPECT_EQ(dp->columns[2].function, masking::MaskFunction::kHash);
  EXPECT_EQ(dp->columns[3].function, masking::MaskFunction::kDetect);
  auto expected_key = maskplan::derive_policy_key("an-example-master-key-of-32-bytes", "agents");
  EXPECT_EQ(dp->hash_key, *expected_key);
  EXPECT_EQ(dp->to_json()["columns"], wire->plan["columns"]);
}

TEST_F(MaskPlannerTest, CatalogDownOrMissingKeyIsUnavailable) {
  catalog_->down = true;
  auto r = plan();
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  catalog_->down = false;
  config_.version = 4;
  config_.masking.key.reset();
  auto no_key = plan();
  ASSERT_FALSE(no_key.is_ok());
  EXPECT_EQ(no_key.status().code(), StatusCode::kUnavailable);
}

TEST(MetadataConninfoTest, QuotesValuesAndMapsTlsModes) {
  config::Target t;
  t.host = "db.internal";
  t.port = 5433;
  t.database = "crm";
  t.role = "pg'warden";
  t.tls_mode = config::UpstreamTlsMode::kVerifyFull;
  t.ca_file = "/etc/ca.pem";
  std::string ci = metadata_conninfo(t, "pa ss\\word");
  EXPECT_NE(ci.find("host='db.internal' port=5433 dbname='crm' user='pg\\'warden'"),
            std::string::npos)
      << ci;
  EXPECT_NE(ci.find("password='pa ss\\\\word'"), std::string::npos) << ci;
  EXPECT_NE(ci.find("sslmode=verify-full sslrootcert='/etc/ca.pem'"), std::string::npos) << ci;
}

}  // namespace
}  // namespace pgwarden::server
