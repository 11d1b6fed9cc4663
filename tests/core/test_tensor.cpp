#include <doctest/doctest.h>
#include <poseidon/core/tensor.hpp>

#include <numeric>

using namespace poseidon;

TEST_CASE("Shape counts, axes and errors") {
  Shape s{2, 3, 4, 5};
  CHECK(s.num_axes() == 4);
  CHECK(s.count() == 120);
  CHECK(s.count(1) == 60);
  CHECK(s.count(1, 3) == 12);
  CHECK(s[-1] == 5);
  CHECK(s.canonical_axis(-4) == 0);
  CHECK(s.str() == "(2,3,4,5)");
  CHECK(Shape{}.count() == 1);
  CHECK_THROWS_WITH_AS((void)s.canonical_axis(4), doctest::Contains("axis 4 out of range for shape (2,3,4,5)"), Error);
  CHECK_THROWS_WITH_AS((void)s.canonical_axis(-5), doctest::Contains("out of range"), Error);
  CHECK_THROWS_WITH_AS((Shape{2, -1}), doctest::Contains("negative dimension"), Error);
  CHECK_THROWS_WITH_AS((Shape{1 << 16, 1 << 16}), doctest::Contains("more than INT_MAX"), Error);
  CHECK_THROWS_AS((void)s.count(3, 2), Error);
}

TEST_CASE_TEMPLATE("Tensor reshape reallocates only when growing", T, float, double) {
  Tensor<CPU, T> t{2, 3};
  CHECK(t.count() == 6);
  CHECK(t.capacity() == 6);
  for (T x : t.data_span()) CHECK(x == T(0));  // zeroed on allocation
  std::iota(t.data(), t.data() + 6, T(1));
  const T* before = t.data();
  t.reshape({3, 2});
  CHECK(t.data() == before);  // fits: same memory, same contents
  CHECK(t.data()[5] == T(6));
  t.reshape({1, 1});
  CHECK(t.count() == 1);
  CHECK(t.data() == before);
  t.reshape({4, 4});
  CHECK(t.capacity() == 16);
  CHECK(t.data() != nullptr);
  CHECK(t.data()[15] == T(0));
}

TEST_CASE("Tensor legacy accessors and offsets") {
  Tensor<CPU, float> t{2, 3, 4, 5};
  CHECK(t.num() == 2);
  CHECK(t.channels() == 3);
  CHECK(t.height() == 4);
  CHECK(t.width() == 5);
  CHECK(t.offset(1, 2, 3, 4) == 119);
  CHECK(t.offset(std::vector<int>{1, 1}) == 80);
  Tensor<CPU, float> v{7};
  CHECK(v.channels() == 1);
  CHECK(v.offset(3) == 3);
  Tensor<CPU, float> five{1, 1, 1, 1, 2};
  CHECK_THROWS_WITH_AS((void)five.num(), doctest::Contains("legacy 4-d accessor"), Error);
  CHECK_THROWS_AS((void)t.offset(std::vector<int>{0, 0, 0, 0, 0}), Error);
}

TEST_CASE("Tensor copies share memory, clone and views") {
  Tensor<CPU, float> a{2, 2};
  a.data()[0] = 1;
  Tensor<CPU, float> b = a;  // shares
  b.data()[1] = 2;
  CHECK(a.data()[1] == 2);
  CHECK(a.shares_data_with(b));
  Tensor<CPU, float> c = a.clone();
  c.data()[0] = 9;
  CHECK(a.data()[0] == 1);
  CHECK_FALSE(a.shares_data_with(c));
  auto v = a.view(Shape{4});
  CHECK(v.shape() == Shape{4});
  CHECK(v.data() == a.data());
  CHECK(v.diff() == a.diff());
  CHECK_THROWS_WITH_AS((void)a.view(Shape{5}), doctest::Contains("has 5 elements, tensor has 4"), Error);
}

TEST_CASE("Tensor share_data and share_diff") {
  Tensor<CPU, float> a{3}, b{3}, c{4};
  b.share_data(a);
  a.data()[2] = 5;
  CHECK(b.data()[2] == 5);
  CHECK(b.diff() != a.diff());
  b.share_diff(a);
  CHECK(b.diff() == a.diff());
  CHECK_THROWS_WITH_AS(c.share_data(a), doctest::Contains("count 4 vs 3"), Error);
}

TEST_CASE("Tensor host transfers check sizes") {
  Tensor<CPU, double> t{2, 2};
  std::vector<double> v{1, 2, 3, 4};
  t.copy_data_from_host(v);
  t.copy_diff_from_host(std::vector<double>{4, 3, 2, 1});
  CHECK(t.data_to_host() == v);
  CHECK(t.diff_to_host()[0] == 4);
  CHECK_THROWS_WITH_AS(t.copy_data_from_host(std::vector<double>{1, 2}), doctest::Contains("2 values for a tensor of shape (2,2)"),
                       Error);
  Tensor<CPU, double> u;
  u.copy_from(t, true);
  CHECK(u.shape() == t.shape());
  CHECK(u.diff_to_host() == t.diff_to_host());
  t.zero_data();
  CHECK(t.data_to_host() == std::vector<double>(4, 0.0));
  CHECK(u.data_to_host() == v);  // copy_from copied, did not share
}

TEST_CASE("An empty tensor is safe") {
  Tensor<CPU, float> t;
  CHECK(t.count() == 0);
  CHECK(t.data() == nullptr);
  t.zero_data();
  CHECK(t.data_to_host().empty());
  Tensor<CPU, float> z{0, 3};
  CHECK(z.count() == 0);
  z.zero_diff();
}
