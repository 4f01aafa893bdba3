-- Seed schema for the throwaway cluster: a small CRM with PII-like columns.
-- Values are synthetic; card numbers pass the Luhn check so detectors can be tested.
SET ROLE app_scram;
CREATE SCHEMA crm;
CREATE TABLE crm.customers (
  id          bigserial PRIMARY KEY,
  full_name   text NOT NULL,
  email       text NOT NULL,
  phone       text,
  ssn         text,
  card_number text,
  iban        text,
  notes       text,
  created_at  timestamptz NOT NULL DEFAULT '2026-01-01 00:00:00+00'
);
CREATE TABLE crm.orders (
  id          bigserial PRIMARY KEY,
  customer_id bigint NOT NULL REFERENCES crm.customers(id),
  amount      numeric(12,2) NOT NULL,
  status      text NOT NULL DEFAULT 'open'
);
INSERT INTO crm.customers (full_name, email, phone, ssn, card_number, iban, notes) VALUES
  ('Ada Lovelace',   'ada@example.com',   '+1-202-555-0101', '123-45-6789', '4111111111111111', 'DE89370400440532013000', 'prefers email'),
  ('Alan Turing',    'alan@example.org',  '+1-202-555-0102', '234-56-7890', '5500005555555559', 'GB82WEST12345698765432', NULL),
  ('Grace Hopper',   'grace@example.net', '+1-202-555-0103', '345-67-8901', '340000000000009',  'FR1420041010050500013M02606', 'call after 5pm'),
  ('Edsger Dijkstra','edsger@example.com','+31-20-555-0104', '456-78-9012', '6011000000000004', 'NL91ABNA0417164300', NULL),
  ('Barbara Liskov', 'barbara@example.com','+1-617-555-0105','567-89-0123', '4012888888881881', 'ES9121000418450200051332', 'VIP');
INSERT INTO crm.orders (customer_id, amount, status)
  SELECT 1 + (g % 5), (g * 7.5)::numeric(12,2), CASE WHEN g % 3 = 0 THEN 'shipped' ELSE 'open' END
  FROM generate_series(1, 50) g;
CREATE TABLE public.kv (k text PRIMARY KEY, v text);
RESET ROLE;
GRANT CONNECT ON DATABASE demo TO app_readonly, app_clear, app_trust;
GRANT USAGE ON SCHEMA crm TO app_readonly, app_clear, app_trust;
GRANT SELECT ON ALL TABLES IN SCHEMA crm TO app_readonly, app_clear, app_trust;
GRANT SELECT ON public.kv TO app_readonly, app_clear, app_trust;
